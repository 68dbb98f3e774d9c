"""The ``ctr_coldstart`` family: a streamed click log + the old/new item split + feature tables.

Inputs of the CTR network per row: the user's categorical fields (its id among users seen in
training — users are warm here, items are cold — plus e.g. age bucket, gender, occupation) and the
item's categorical fields, multi-hot bag and frozen text embedding. The item's **ID embedding** is
not a feature: it is what the methods initialize and warm up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from metarec.recsys.family import ColdStartFamily, FeatureTable, check_fields
from metarec.recsys.interactions import recbole_ml100k_dir
from metarec.log import get_logger
from metarec.recsys.ctr.log import read_click_log
from metarec.recsys.ctr.split import make_ctr_split
from metarec.registry import FAMILIES

log = get_logger(__name__)


class CTRColdStartFamily:
    """Click log + split + feature definitions (see module docstring).

    Args:
        data_dir: RecBole atomic or MovieLens folder; ``None``: the ml-100k copy of the installed
            ``recbole`` package.
        format, dataset, label_field, click_field, click_threshold, rating_min, rating_max, lenient:
            see :func:`~metarec.recsys.ctr.log.read_click_log`.
        new_items, item_year_cut, item_year_field, cut, k_shot, min_query, val_items, evaluate, split_seed: see
            :func:`~metarec.recsys.ctr.split.make_ctr_split`.
        user_id: use the user id as a categorical field (ids of users absent from training map to 0).
        user_fields, item_fields, item_multi_fields, item_text_fields, buckets: as the ``coldstart``
            family's.
    """

    def __init__(
        self,
        data_dir: Optional[str] = None,
        format: str = "auto",
        dataset: Optional[str] = None,
        label_field: Optional[str] = None,
        click_field: str = "rating",
        click_threshold: float = 4.0,
        rating_min: float = 1.0,
        rating_max: float = 5.0,
        lenient: bool = False,
        new_items: str = "release_year",
        item_year_cut: Optional[int] = None,
        item_year_field: str = "release_year",
        cut: float | int | str = 0.8,
        k_shot: int = 10,
        min_query: int = 10,
        val_items: float = 0.0,
        evaluate: str = "test",
        split_seed: int = 0,
        user_id: bool = True,
        user_fields: Optional[list[str]] = None,
        item_fields: Optional[list[str]] = None,
        item_multi_fields: Optional[list[str]] = None,
        item_text_fields: Optional[list[str]] = None,
        buckets: Optional[dict[str, list[float]]] = None,
        name: str = "ctr_coldstart",
    ) -> None:
        self.name = name
        path = Path(data_dir) if data_dir else recbole_ml100k_dir()
        self.data = read_click_log(path, fmt=format, dataset=dataset, label_field=label_field,
                                   click_field=click_field, click_threshold=click_threshold,
                                   rating_min=rating_min, rating_max=rating_max, lenient=lenient)
        self.split = make_ctr_split(self.data, k_shot=k_shot, min_query=min_query, new_items=new_items,
                                    item_year_cut=item_year_cut, item_year_field=item_year_field, cut=cut,
                                    val_items=val_items, evaluate=evaluate, split_seed=split_seed)
        self.user_id = bool(user_id)
        self.user_fields = list(user_fields or [])
        self.item_fields = list(item_fields or [])
        self.item_multi_fields = list(item_multi_fields or [])
        self.item_text_fields = list(item_text_fields or [])
        self.buckets = dict(buckets or {})
        check_fields(self)
        self.filter_report = {"read": self.data.read_summary(), "split": self.split.report}
        log.info("ctr cold-start split: %d training rows of %d old items (%d meta-training items); "
                 "%d new test items, %d query rows", self.split.report["train_rows"], self.split.report["old_items"],
                 self.split.report["meta_items"], self.split.report["test_items"], self.split.report["query_rows"])

    @property
    def item_texts(self) -> list[str]:
        """One text per item (what the frozen encoder embeds)."""
        # The coldstart family's rule ("title | genres", else "item <id>") over the same field tables.
        return ColdStartFamily.item_texts.fget(self)  # type: ignore[attr-defined]

    def feature_table(self, item_text: Tensor) -> FeatureTable:
        """Categorical ids (user id first when ``user_id``), item bags and the given text embeddings."""
        table: FeatureTable = ColdStartFamily.feature_table(self, item_text)  # type: ignore[arg-type]
        if self.user_id:
            seen = np.zeros(self.data.n_users, dtype=bool)
            seen[self.data.user[self.split.train_rows]] = True
            ids = torch.from_numpy(np.where(seen, np.arange(1, self.data.n_users + 1), 0).astype(np.int64))
            table.user_cat = torch.cat([ids[:, None], table.user_cat], 1)
            table.user_vocab = [self.data.n_users + 1, *table.user_vocab]
        return table

    def train_ctr(self) -> float:
        """Click rate of the training rows (old items only): the popularity reference's prior."""
        return float(self.data.click[self.split.train_rows].mean())


@FAMILIES.register("ctr_coldstart")
def ctr_coldstart_family(**kw: Any) -> CTRColdStartFamily:
    return CTRColdStartFamily(**kw)
