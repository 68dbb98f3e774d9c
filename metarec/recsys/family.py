"""The ``coldstart`` family: interactions + the four-state split + the feature definitions.

:class:`ColdStartFamily` reads the interactions (:mod:`metarec.recsys.interactions`), splits them
(:mod:`metarec.recsys.split`) and turns user and item fields into a :class:`FeatureTable` of
model inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from metarec.data.corpus import DataError
from metarec.log import get_logger
from metarec.recsys.interactions import load_interactions, recbole_ml100k_dir
from metarec.recsys.split import SplitSpec, make_split, parse_year
from metarec.registry import FAMILIES

log = get_logger(__name__)


def _vocab_ids(values: list[str], edges: Optional[list[float]]) -> tuple[np.ndarray, int]:
    """Categorical ids (0 = missing/unknown) of raw values; numeric ``edges`` bucket them."""
    if edges is not None:
        x = np.array([parse_year(v) for v in values])
        ids = np.where(np.isnan(x), 0, np.digitize(np.nan_to_num(x), edges) + 1)
        return ids.astype(np.int64), len(edges) + 2
    vocab = {v: i + 1 for i, v in enumerate(sorted({v for v in values if v}))}
    return np.array([vocab.get(v, 0) for v in values], dtype=np.int64), len(vocab) + 1


def check_fields(family: Any) -> None:
    """Every configured user / item field of a family exists in its data's feature tables.

    Args:
        family: has ``data`` (``user_features``, ``item_features``, ``source``) and ``user_fields``,
            ``item_fields``, ``item_multi_fields``, ``item_text_fields`` (the ``coldstart`` and
            ``ctr_coldstart`` families).

    Raises:
        DataError: naming the source, the missing fields and the fields there are.
    """
    d = family.data
    for kind, fields, table in (("user", family.user_fields, d.user_features),
                                ("item", family.item_fields + family.item_multi_fields + family.item_text_fields,
                                 d.item_features)):
        missing = [f for f in fields if f not in table]
        if missing:
            raise DataError(f"{d.source}: {kind} field(s) {missing} not in the data ({kind} fields: {sorted(table)})")


@dataclass
class FeatureTable:
    """Model inputs of every user and item.

    Attributes:
        user_cat: ``(n_users, n_user_fields)`` categorical ids.
        item_cat: ``(n_items, n_item_fields)`` categorical ids.
        item_multi: ``(n_items, n_multi)`` multi-hot (e.g. genres), rows normalized to sum 1.
        item_text: ``(n_items, text_dim)`` frozen text embeddings.
        user_vocab, item_vocab: vocabulary size of every categorical field.
    """

    user_cat: Tensor
    item_cat: Tensor
    item_multi: Tensor
    item_text: Tensor
    user_vocab: list[int]
    item_vocab: list[int]

    def items(self, idx: Tensor) -> dict[str, Tensor]:
        return {"cat": self.item_cat[idx], "multi": self.item_multi[idx], "text": self.item_text[idx]}

    def schema(self) -> dict[str, Any]:
        """What a model needs to know about the inputs (vocab sizes and widths)."""
        return {"user_vocab": list(self.user_vocab), "item_vocab": list(self.item_vocab),
                "n_multi": int(self.item_multi.shape[1]), "text_dim": int(self.item_text.shape[1])}


def split_spec(options: Mapping[str, Any]) -> SplitSpec:
    """A :class:`SplitSpec` from the config's ``family.split`` mapping; an unknown key is an error naming it."""
    known = {f.name for f in fields(SplitSpec)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) family.split.{', family.split.'.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    return SplitSpec(**options)


class ColdStartFamily:
    """Interactions + the four-state split + feature definitions: the ``coldstart`` family.

    Args:
        data_dir: RecBole atomic or MovieLens ml-100k folder; ``None``: the ml-100k copy of the
            installed ``recbole`` package.
        format, dataset, rating_min, rating_max, lenient: see :func:`load_interactions`.
        split: how the interactions are split into training tasks and the four test states: a
            :class:`~metarec.recsys.split.SplitSpec` or its fields as a mapping (the config's
            ``family.split`` group).
        like_threshold: a rating ``>= like_threshold`` is a like (the click head's label).
        user_fields: categorical user fields (e.g. age, gender, occupation). No user id: an id
            embedding cannot generalise to new users.
        item_fields: categorical item fields (e.g. release_year).
        item_multi_fields: space-separated token-sequence fields embedded as a bag (e.g. genres).
        item_text_fields: fields joined with ``" | "`` into the text the encoder embeds.
        buckets: numeric fields bucketed by these edges (e.g. age, release year).
    """

    def __init__(
        self,
        data_dir: Optional[str] = None,
        format: str = "auto",
        dataset: Optional[str] = None,
        rating_min: float = 1.0,
        rating_max: float = 5.0,
        lenient: bool = False,
        split: SplitSpec | Mapping[str, Any] | None = None,
        like_threshold: float = 4.0,
        user_fields: Optional[list[str]] = None,
        item_fields: Optional[list[str]] = None,
        item_multi_fields: Optional[list[str]] = None,
        item_text_fields: Optional[list[str]] = None,
        buckets: Optional[dict[str, list[float]]] = None,
        name: str = "coldstart",
    ) -> None:
        self.name = name
        spec = split if isinstance(split, SplitSpec) else split_spec(split or {})
        path = Path(data_dir) if data_dir else recbole_ml100k_dir()
        self.data = load_interactions(path, fmt=format, dataset=dataset, rating_min=rating_min,
                                      rating_max=rating_max, lenient=lenient)
        self.like_threshold = float(like_threshold)
        self.split = make_split(self.data, spec)
        self.n_query = spec.n_query
        self.user_fields = list(user_fields or [])
        self.item_fields = list(item_fields or [])
        self.item_multi_fields = list(item_multi_fields or [])
        self.item_text_fields = list(item_text_fields or [])
        self.buckets = dict(buckets or {})
        check_fields(self)
        self.filter_report = {"read": self.data.read_summary(), "split": self.split.filter_report}
        log.info("cold-start split at %s: %d training users; test users per state %s",
                 self.split.filter_report["cut_utc"], len(self.split.train),
                 {s: len(t) for s, t in self.split.test.items()})

    @property
    def item_texts(self) -> list[str]:
        """One text per item (what the frozen encoder embeds)."""
        f = self.data.item_features
        out = []
        for i in range(self.data.n_items):
            parts = [f[k][i] for k in self.item_text_fields if f[k][i]]
            out.append(" | ".join(parts) or f"item {self.data.item_ids[i]}")
        return out

    def feature_table(self, item_text: Tensor) -> FeatureTable:
        """Categorical ids and multi-hot bags of all users and items, with the given text embeddings."""
        d = self.data
        ucols, uv = [], []
        for f in self.user_fields:
            ids, v = _vocab_ids(d.user_features[f], self.buckets.get(f))
            ucols.append(ids)
            uv.append(v)
        icols, iv = [], []
        for f in self.item_fields:
            ids, v = _vocab_ids(d.item_features[f], self.buckets.get(f))
            icols.append(ids)
            iv.append(v)
        tokens = sorted({t for f in self.item_multi_fields for v in d.item_features[f] for t in v.split()})
        tid = {t: j for j, t in enumerate(tokens)}
        multi = np.zeros((d.n_items, max(len(tokens), 1)), dtype=np.float32)
        for f in self.item_multi_fields:
            for i, v in enumerate(d.item_features[f]):
                for t in v.split():
                    multi[i, tid[t]] = 1.0
        multi /= np.maximum(multi.sum(1, keepdims=True), 1.0)
        empty = lambda n: np.zeros((n, 0), dtype=np.int64)  # noqa: E731
        return FeatureTable(
            user_cat=torch.from_numpy(np.stack(ucols, 1) if ucols else empty(d.n_users)),
            item_cat=torch.from_numpy(np.stack(icols, 1) if icols else empty(d.n_items)),
            item_multi=torch.from_numpy(multi), item_text=item_text.float(), user_vocab=uv, item_vocab=iv,
        )

    def train_stats(self) -> dict[str, Any]:
        """Per-item mean rating and count over training interactions only (popularity baseline)."""
        rows = self.split.train_rows()
        d = self.data
        count = np.bincount(d.item[rows], minlength=d.n_items).astype(np.float64)
        total = np.bincount(d.item[rows], weights=d.rating[rows], minlength=d.n_items)
        return {"item_count": torch.tensor(count, dtype=torch.float32),
                "item_mean": torch.tensor(np.where(count > 0, total / np.maximum(count, 1), np.nan), dtype=torch.float32),
                "global_mean": float(d.rating[rows].mean())}


@FAMILIES.register("coldstart")
def coldstart_family(**kw: Any) -> ColdStartFamily:
    return ColdStartFamily(**kw)


coldstart_family.kwargs_target = ColdStartFamily  # type: ignore[attr-defined]  (config validation reads its keys)
