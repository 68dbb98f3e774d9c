"""Cold-start recommendation as meta-learning: each user is a task (MeLU, Lee et al. KDD 2019,
arXiv:1908.00413).

A task is one user: the **support** set is items the user rated (to adapt on), the **query**
set ``n_query`` further items to score. Interactions are split by a cut time into the four
states of MeLU:

=================  =========================================================================
``train``          existing users × existing items, ratings before the cut (meta-training)
``existing/existing``  existing users' ratings on existing items after the cut (warm state)
``existing/new``   existing users' ratings on new items
``new/existing``   new users' ratings on existing items
``new/new``        new users' ratings on new items
=================  =========================================================================

*Existing user*: first rating before the cut. *Existing item*: ``new_items="first_rating"`` —
first rating before the cut; ``new_items="release_year"`` — released before ``item_year_cut``
(MeLU's item split is by release date; on ml-100k the first-rating rule leaves the new-item
states almost empty, see docs/coldstart.md). Training never contains a new user, a new item or
a post-cut rating, so no test query can be in it.

Per state a user is a task when they have ``min_ratings``–``max_ratings`` ratings there (MeLU:
13–100); the query is ``n_query`` of them drawn with a seed, the support all the others. Users
outside the range are counted per state in :attr:`ColdStartSplit.filter_report`, never dropped
silently.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from metarec.data.corpus import DataError
from metarec.data.datamodule import MetaBatchSampler, ShardSampler, _as_list, _first
from metarec.data.interactions import Interactions, load_interactions, recbole_ml100k_dir
from metarec.log import get_logger
from metarec.registry import FAMILIES

log = get_logger(__name__)

STATES = ("existing/existing", "existing/new", "new/existing", "new/new")


@dataclass
class UserTask:
    """One user's ratings in one state, as interaction rows.

    Attributes:
        user: user index.
        state: ``"train"`` or one of :data:`STATES`.
        rows: interaction rows of the user in this state, shape ``(m,)``.
        support: rows of the fixed support set (test tasks), ``None`` for training tasks
            (their split is drawn per episode).
        query: rows of the fixed query set.
    """

    user: int
    state: str
    rows: np.ndarray
    support: Optional[np.ndarray] = None
    query: Optional[np.ndarray] = None


@dataclass
class RatingEpisode:
    """A user task with model inputs: what a recommender sees.

    Attributes:
        user_x: categorical feature ids of the user, ``(n_user_fields,)``.
        support_x: item inputs of the support set: ``{"cat": (n_s, n_item_fields) long,
            "multi": (n_s, n_multi) float, "text": (n_s, text_dim) float}``.
        support_y: support ratings ``(n_s,)`` float.
        query_x: item inputs of the query set (as ``support_x``, ``n_q`` rows).
        query_y: query ratings ``(n_q,)`` float.
        state: the task's state (``"train"`` or one of :data:`STATES`).
        user: raw user id.
        support_items, query_items: item indices ``(n_s,)``, ``(n_q,)``.
        index: position in its stream or fixed set.
        family: the family name.
    """

    user_x: Tensor
    support_x: dict[str, Tensor]
    support_y: Tensor
    query_x: dict[str, Tensor]
    query_y: Tensor
    state: str
    user: str
    support_items: Tensor
    query_items: Tensor
    index: int = -1
    family: str = ""

    def to(self, device: torch.device | str) -> "RatingEpisode":
        mv = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return RatingEpisode(self.user_x.to(device), mv(self.support_x), self.support_y.to(device), mv(self.query_x),
                             self.query_y.to(device), self.state, self.user, self.support_items, self.query_items,
                             self.index, self.family)

    def fingerprint(self) -> str:
        """Hash of family, state, user, support/query items and ratings (pairing key)."""
        h = hashlib.sha256()
        for s in (self.family, self.state, self.user):
            h.update(s.encode() + b"\0")
        for t in (self.support_items, self.query_items):
            h.update(t.to(torch.int64).numpy().tobytes())
        for t in (self.support_y, self.query_y):
            h.update(t.detach().cpu().to(torch.float32).numpy().tobytes())
        return h.hexdigest()[:16]


def parse_cut(cut: float | int | str, timestamps: np.ndarray) -> float:
    """The cut time: a quantile in (0, 1) of the rating times, a Unix time, or an ISO date."""
    if isinstance(cut, str):
        try:
            return datetime.fromisoformat(cut).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            raise ValueError(f"cut must be a quantile in (0, 1), a Unix time or an ISO date, got {cut!r}") from None
    c = float(cut)
    if 0.0 < c < 1.0:
        # "lower": a time that occurs in the data, so ratings at exactly the cut are post-cut.
        return float(np.quantile(timestamps, c, method="lower"))
    if c >= 1.0:
        return c
    raise ValueError(f"cut must be a quantile in (0, 1), a Unix time or an ISO date, got {cut!r}")


def _year(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return math.nan


@dataclass
class ColdStartSplit:
    """The four-state protocol over one :class:`Interactions` (see module docstring).

    Attributes:
        cut: the cut time (Unix seconds).
        existing_user, existing_item: boolean masks over user / item indices.
        bucket: state of every interaction (``"train"``, one of :data:`STATES`, or ``"unused"``
            for an existing user's post-cut rating that no state takes — none under the rules here).
        train: training tasks (one per kept existing user).
        test: fixed test tasks per state.
        filter_report: what was kept and filtered, per state (JSON-friendly).
    """

    cut: float
    existing_user: np.ndarray
    existing_item: np.ndarray
    bucket: np.ndarray
    train: list[UserTask]
    test: dict[str, list[UserTask]]
    filter_report: dict[str, Any] = field(default_factory=dict)

    def train_rows(self) -> np.ndarray:
        """Interaction rows meta-training (and popularity counts) may use."""
        return np.concatenate([t.rows for t in self.train]) if self.train else np.empty(0, dtype=np.int64)


def make_split(
    data: Interactions,
    cut: float | int | str = 0.8,
    new_items: str = "first_rating",
    item_year_cut: Optional[int] = None,
    item_year_field: str = "release_year",
    min_ratings: int = 13,
    max_ratings: int = 100,
    n_query: int = 10,
    seed: int = 0,
) -> ColdStartSplit:
    """Splits interactions into training tasks and the four test states.

    Raises:
        ValueError: inconsistent sizes (``min_ratings < n_query + 1`` leaves no support) or options.
        DataError: the split leaves no training task.
    """
    if n_query < 1:
        raise ValueError(f"n_query must be >= 1, got {n_query}")
    if min_ratings < n_query + 1:
        raise ValueError(f"min_ratings={min_ratings} leaves no support item with n_query={n_query}: "
                         f"need min_ratings >= n_query + 1")
    if max_ratings < min_ratings:
        raise ValueError(f"max_ratings={max_ratings} < min_ratings={min_ratings}")
    t_cut = parse_cut(cut, data.timestamp)
    first_u = np.full(data.n_users, np.inf)
    np.minimum.at(first_u, data.user, data.timestamp)
    existing_user = first_u < t_cut
    items_report: dict[str, Any] = {}
    if new_items == "first_rating":
        first_i = np.full(data.n_items, np.inf)
        np.minimum.at(first_i, data.item, data.timestamp)
        existing_item = first_i < t_cut
    elif new_items == "release_year":
        if item_year_cut is None:
            raise ValueError("new_items='release_year' needs item_year_cut (e.g. 1997)")
        if item_year_field not in data.item_features:
            raise DataError(f"{data.source}: no item field {item_year_field!r} for new_items='release_year' "
                            f"(item fields: {sorted(data.item_features)})")
        years = np.array([_year(v) for v in data.item_features[item_year_field]])
        unknown = np.isnan(years)
        # An item without a year cannot be placed by date: it counts as existing (reported).
        existing_item = unknown | (years < item_year_cut)
        items_report["items_without_year_counted_existing"] = int(unknown.sum())
    else:
        raise ValueError(f"new_items must be 'first_rating' or 'release_year', got {new_items!r}")

    eu = existing_user[data.user]
    ei = existing_item[data.item]
    pre = data.timestamp < t_cut
    bucket = np.full(len(data), "unused", dtype=object)
    bucket[eu & ei & pre] = "train"
    bucket[eu & ei & ~pre] = "existing/existing"
    bucket[eu & ~ei] = "existing/new"
    bucket[~eu & ei] = "new/existing"
    bucket[~eu & ~ei] = "new/new"

    report: dict[str, Any] = {
        "cut": t_cut, "cut_utc": datetime.fromtimestamp(t_cut, tz=timezone.utc).isoformat(),
        "new_items": new_items, "item_year_cut": item_year_cut,
        "existing_users": int(existing_user.sum()), "new_users": int((~existing_user).sum()),
        "existing_items": int(existing_item.sum()), "new_items_count": int((~existing_item).sum()),
        "min_ratings": min_ratings, "max_ratings": max_ratings, "n_query": n_query, **items_report,
    }
    order = np.argsort(data.user, kind="stable")
    train: list[UserTask] = []
    test: dict[str, list[UserTask]] = {s: [] for s in STATES}
    for si, state in enumerate(("train", *STATES)):
        rows = order[bucket[order] == state]
        users, starts = np.unique(data.user[rows], return_index=True)
        groups = np.split(rows, starts[1:]) if len(rows) else []
        kept = too_few = too_many = 0
        dropped_ratings = 0
        for u, g in zip(users.tolist(), groups):
            if len(g) < min_ratings:
                too_few += 1
                dropped_ratings += len(g)
                continue
            if len(g) > max_ratings:
                too_many += 1
                dropped_ratings += len(g)
                continue
            kept += 1
            g = np.sort(g)
            if state == "train":
                train.append(UserTask(u, state, g))
            else:
                rng = np.random.default_rng([seed, si, u])
                perm = rng.permutation(g)
                test[state].append(UserTask(u, state, g, support=np.sort(perm[n_query:]), query=np.sort(perm[:n_query])))
        report[state] = {"users_kept": kept, "users_too_few": too_few, "users_too_many": too_many,
                         "ratings": int(len(rows)), "ratings_in_kept_tasks": int(len(rows) - dropped_ratings)}
    report["unused_ratings"] = int((bucket == "unused").sum())
    if not train:
        raise DataError(f"{data.source}: no training user with {min_ratings}-{max_ratings} ratings before the cut "
                        f"{report['cut_utc']}")
    for state in STATES:
        if not test[state]:
            log.warning("cold-start state %s has no user with %d-%d ratings (%s)", state, min_ratings, max_ratings,
                        report[state])
    return ColdStartSplit(t_cut, existing_user, existing_item, bucket, train, test, report)


# -- features ---------------------------------------------------------------------------------
def _vocab_ids(values: list[str], edges: Optional[list[float]]) -> tuple[np.ndarray, int]:
    """Categorical ids (0 = missing/unknown) of raw values; numeric ``edges`` bucket them."""
    if edges is not None:
        x = np.array([_year(v) for v in values])
        ids = np.where(np.isnan(x), 0, np.digitize(np.nan_to_num(x), edges) + 1)
        return ids.astype(np.int64), len(edges) + 2
    vocab = {v: i + 1 for i, v in enumerate(sorted({v for v in values if v}))}
    return np.array([vocab.get(v, 0) for v in values], dtype=np.int64), len(vocab) + 1


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


class ColdStartFamily:
    """Interactions + the four-state split + feature definitions: the ``coldstart`` family.

    Args:
        data_dir: RecBole atomic or MovieLens ml-100k folder; ``None``: the ml-100k copy of the
            installed ``recbole`` package.
        format, dataset, rating_min, rating_max, lenient: see :func:`load_interactions`.
        cut, new_items, item_year_cut, item_year_field, min_ratings, max_ratings, n_query: see
            :func:`make_split`; ``split_seed`` seeds the support/query draw of test users.
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
        cut: float | int | str = 0.8,
        new_items: str = "first_rating",
        item_year_cut: Optional[int] = None,
        item_year_field: str = "release_year",
        min_ratings: int = 13,
        max_ratings: int = 100,
        n_query: int = 10,
        split_seed: int = 0,
        like_threshold: float = 4.0,
        user_fields: Optional[list[str]] = None,
        item_fields: Optional[list[str]] = None,
        item_multi_fields: Optional[list[str]] = None,
        item_text_fields: Optional[list[str]] = None,
        buckets: Optional[dict[str, list[float]]] = None,
        name: str = "coldstart",
    ) -> None:
        self.name = name
        path = Path(data_dir) if data_dir else recbole_ml100k_dir()
        self.data = load_interactions(path, fmt=format, dataset=dataset, rating_min=rating_min,
                                      rating_max=rating_max, lenient=lenient)
        self.like_threshold = float(like_threshold)
        self.split = make_split(self.data, cut=cut, new_items=new_items, item_year_cut=item_year_cut,
                                item_year_field=item_year_field, min_ratings=min_ratings, max_ratings=max_ratings,
                                n_query=n_query, seed=split_seed)
        self.n_query = int(n_query)
        self.user_fields = list(user_fields or [])
        self.item_fields = list(item_fields or [])
        self.item_multi_fields = list(item_multi_fields or [])
        self.item_text_fields = list(item_text_fields or [])
        self.buckets = dict(buckets or {})
        for kind, fields, table in (("user", self.user_fields, self.data.user_features),
                                    ("item", self.item_fields + self.item_multi_fields + self.item_text_fields,
                                     self.data.item_features)):
            missing = [f for f in fields if f not in table]
            if missing:
                raise DataError(f"{self.data.source}: {kind} field(s) {missing} not in the data "
                                f"({kind} fields: {sorted(table)})")
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


# -- episodes and the data module -----------------------------------------------------------------
def _episode(family: ColdStartFamily, table: FeatureTable, task: UserTask, support: np.ndarray, query: np.ndarray,
             index: int) -> RatingEpisode:
    d = family.data
    s_items, q_items = torch.from_numpy(d.item[support]), torch.from_numpy(d.item[query])
    return RatingEpisode(
        user_x=table.user_cat[task.user], support_x=table.items(s_items),
        support_y=torch.from_numpy(d.rating[support]), query_x=table.items(q_items),
        query_y=torch.from_numpy(d.rating[query]), state=task.state, user=d.user_ids[task.user],
        support_items=s_items, query_items=q_items, index=index, family=family.name,
    )


class TrainTasks(Dataset):
    """Item ``i``: a training user drawn with seed ``(seed, i)``, ``n_query`` query ratings, the rest support."""

    def __init__(self, family: ColdStartFamily, table: FeatureTable, seed: int) -> None:
        self.family, self.table, self.seed = family, table, int(seed)

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> RatingEpisode:
        rng = np.random.default_rng([self.seed, i])
        tasks = self.family.split.train
        task = tasks[int(rng.integers(len(tasks)))]
        perm = rng.permutation(task.rows)
        n_q = self.family.n_query
        return _episode(self.family, self.table, task, perm[n_q:], perm[:n_q], i)


class TestTasks(Dataset):
    """The fixed test tasks of all four states, in state order."""

    def __init__(self, family: ColdStartFamily, table: FeatureTable) -> None:
        self.family, self.table = family, table
        self.tasks = [t for s in STATES for t in family.split.test[s]]

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int) -> RatingEpisode:
        t = self.tasks[i]
        assert t.support is not None and t.query is not None
        return _episode(self.family, self.table, t, t.support, t.query, i)


class ColdStartDataModule(L.LightningDataModule):
    """Seeded stream of training user tasks; the fixed test tasks of the four states.

    No validation set: MeLU has none, and holding out training users would shrink the
    meta-training set; the test stage uses the final weights.
    """

    def __init__(self, family: ColdStartFamily, table: FeatureTable, meta_batch_size: int = 32,
                 max_steps: int = 100, seed: int = 0) -> None:
        super().__init__()
        self.family, self.table = family, table
        self.meta_batch_size, self.max_steps, self.seed = int(meta_batch_size), int(max_steps), int(seed)

    def _world(self) -> tuple[int, int, int]:
        t = self.trainer
        if t is None:
            return 0, 0, 1
        return int(t.global_step), int(t.global_rank), int(t.world_size)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TrainTasks(self.family, self.table, self.seed),
                          batch_sampler=MetaBatchSampler(self.meta_batch_size, self.max_steps, self._world),
                          collate_fn=_as_list, generator=self._generator())

    def test_dataloader(self) -> DataLoader:
        ds = TestTasks(self.family, self.table)
        return DataLoader(ds, batch_size=1, sampler=ShardSampler(len(ds), self._world), collate_fn=_first,
                          generator=self._generator())
