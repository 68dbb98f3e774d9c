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

**Validation users** (for choosing hyper-parameters and early stopping without the test states):
``val_users`` > 0 holds out that fraction of the training users who are test users in no state
(drawn with their own generator from ``seed``, :func:`hold_out`). They leave meta-training, and
their pre-cut ratings become fixed tasks (support/query drawn like a test user's) in
:attr:`ColdStartSplit.val`: new users to the trained model, like the ``new/*`` test users. The
test users and their support/query draws do not depend on ``val_users``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np

from metarec.data.corpus import DataError
from metarec.log import get_logger
from metarec.recsys.interactions import Interactions

log = get_logger(__name__)

STATES = ("existing/existing", "existing/new", "new/existing", "new/new")
#: The ``state`` of validation tasks; its position seeds their draws (test states use 1-4).
VAL_STATE, _VAL_STREAM = "val", len(STATES) + 1


def hold_out(candidates: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A validation set: ``round(fraction * n)`` (at least 1) of ``candidates`` ``(n,)``, without replacement.

    Shared by the rating (validation users) and CTR (validation items) splits.
    """
    return rng.choice(candidates, size=max(1, round(fraction * len(candidates))), replace=False)


@dataclass
class UserTask:
    """One user's ratings in one state, as interaction rows.

    Attributes:
        user: user index.
        state: ``"train"``, one of :data:`STATES` or :data:`VAL_STATE`.
        rows: interaction rows of the user in this state, shape ``(m,)``.
        support: rows of the fixed support set (test and validation tasks), ``None`` for training tasks
            (their split is drawn per episode).
        query: rows of the fixed query set.
    """

    user: int
    state: str
    rows: np.ndarray
    support: Optional[np.ndarray] = None
    query: Optional[np.ndarray] = None



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


def parse_year(v: str) -> float:
    """A year field as a number; ``nan`` when it is not one (e.g. an empty or misspelt year)."""
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
        train: training tasks (one per kept existing user, less validation users).
        test: fixed test tasks per state.
        filter_report: what was kept and filtered, per state (JSON-friendly).
        val: fixed validation tasks (empty unless ``val_users`` > 0).
    """

    cut: float
    existing_user: np.ndarray
    existing_item: np.ndarray
    bucket: np.ndarray
    train: list[UserTask]
    test: dict[str, list[UserTask]]
    filter_report: dict[str, Any] = field(default_factory=dict)
    val: list[UserTask] = field(default_factory=list)

    def train_rows(self) -> np.ndarray:
        """Interaction rows meta-training (and popularity counts) may use."""
        return np.concatenate([t.rows for t in self.train]) if self.train else np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class SplitSpec:
    """How :func:`make_split` splits interactions (validated on construction).

    Attributes:
        cut: the cut time: a quantile in (0, 1) of the rating times, a Unix time or an ISO date.
        new_items: ``"first_rating"`` (an item is new when first rated at or after the cut) or
            ``"release_year"`` (new when released in ``item_year_cut`` or later).
        item_year_cut: the first "new" release year (needed by ``new_items="release_year"``).
        item_year_field: the item field holding the release year.
        min_ratings, max_ratings: a user is a task in a state with this many ratings there (MeLU: 13–100).
        n_query: query ratings per task; the support is all the user's other ratings in the state.
        seed: seed of the support/query draw of test users (the same for every method and training seed),
            and (another generator) of the validation users and their draw.
        val_users: fraction in [0, 1) of the training users who are test users in no state held out as
            validation users (module docstring); 0: none.

    Raises:
        ValueError: inconsistent sizes (``min_ratings < n_query + 1`` leaves no support) or options.
    """

    cut: float | int | str = 0.8
    new_items: str = "first_rating"
    item_year_cut: Optional[int] = None
    item_year_field: str = "release_year"
    min_ratings: int = 13
    max_ratings: int = 100
    n_query: int = 10
    seed: int = 0
    val_users: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_users < 1.0:
            raise ValueError(f"val_users must be a fraction in [0, 1), got {self.val_users}")
        if self.n_query < 1:
            raise ValueError(f"n_query must be >= 1, got {self.n_query}")
        if self.min_ratings < self.n_query + 1:
            raise ValueError(f"min_ratings={self.min_ratings} leaves no support item with n_query={self.n_query}: "
                             f"need min_ratings >= n_query + 1")
        if self.max_ratings < self.min_ratings:
            raise ValueError(f"max_ratings={self.max_ratings} < min_ratings={self.min_ratings}")
        if self.new_items not in ("first_rating", "release_year"):
            raise ValueError(f"new_items must be 'first_rating' or 'release_year', got {self.new_items!r}")
        if self.new_items == "release_year" and self.item_year_cut is None:
            raise ValueError("new_items='release_year' needs item_year_cut (e.g. 1997)")


def make_split(data: Interactions, spec: SplitSpec = SplitSpec()) -> ColdStartSplit:
    """Splits interactions into training tasks and the four test states.

    Raises:
        ValueError: the cut is not a quantile, a Unix time or an ISO date.
        DataError: the split leaves no training task, or the data lack the release-year field.
    """
    cut, new_items, item_year_cut, item_year_field = spec.cut, spec.new_items, spec.item_year_cut, spec.item_year_field
    min_ratings, max_ratings, n_query, seed = spec.min_ratings, spec.max_ratings, spec.n_query, spec.seed
    t_cut = parse_cut(cut, data.timestamp)
    first_u = np.full(data.n_users, np.inf)
    np.minimum.at(first_u, data.user, data.timestamp)
    existing_user = first_u < t_cut
    items_report: dict[str, Any] = {}
    if new_items == "first_rating":
        first_i = np.full(data.n_items, np.inf)
        np.minimum.at(first_i, data.item, data.timestamp)
        existing_item = first_i < t_cut
    else:  # "release_year" (SplitSpec checked the options)
        assert item_year_cut is not None
        if item_year_field not in data.item_features:
            raise DataError(f"{data.source}: no item field {item_year_field!r} for new_items='release_year' "
                            f"(item fields: {sorted(data.item_features)})")
        years = np.array([parse_year(v) for v in data.item_features[item_year_field]])
        unknown = np.isnan(years)
        # An item without a year cannot be placed by date: it counts as existing (reported).
        existing_item = unknown | (years < item_year_cut)
        items_report["items_without_year_counted_existing"] = int(unknown.sum())

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
    val: list[UserTask] = []
    if spec.val_users > 0:
        tested = {t.user for tasks in test.values() for t in tasks}
        cand = np.array([t.user for t in train if t.user not in tested], dtype=np.int64)
        if not len(cand):
            raise DataError(f"{data.source}: val_users={spec.val_users} but every training user is also a test user "
                            f"(validation users must be disjoint from test users)")
        held = set(hold_out(cand, spec.val_users, np.random.default_rng([seed, _VAL_STREAM])).tolist())
        for t in train:
            if t.user in held:
                perm = np.random.default_rng([seed, _VAL_STREAM, t.user]).permutation(t.rows)
                val.append(UserTask(t.user, VAL_STATE, t.rows, support=np.sort(perm[n_query:]),
                                    query=np.sort(perm[:n_query])))
        train = [t for t in train if t.user not in held]
        report[VAL_STATE] = {"val_users": spec.val_users, "candidates": int(len(cand)), "users_kept": len(val),
                             "ratings": int(sum(len(t.rows) for t in val))}
    if not train:
        raise DataError(f"{data.source}: no training user with {min_ratings}-{max_ratings} ratings before the cut "
                        f"{report['cut_utc']}")
    for state in STATES:
        if not test[state]:
            log.warning("cold-start state %s has no user with %d-%d ratings (%s)", state, min_ratings, max_ratings,
                        report[state])
    return ColdStartSplit(t_cut, existing_user, existing_item, bucket, train, test, report, val)
