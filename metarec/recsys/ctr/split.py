"""Old items train, new items are test tasks with warm-up batches a, b, c (Meta-Embedding protocol).

An item is **new** when it was released in or after ``item_year_cut`` (``new_items="release_year"``,
the ml-100k default, as the MeLU family does) or first appears at or after the cut time
(``new_items="first_seen"``; ``cut`` is a quantile of the log's times, a Unix time or an ISO date).

* **Training** holds every interaction of every old item (pre-training the base model); old items
  with at least ``2 * k_shot`` interactions are the meta-training tasks (two batches each).
* A **test task** is a new item with at least ``3 * k_shot + min_query`` interactions. Its
  interactions in time order (ties: file order) are warm-up batch ``a`` (the first ``k_shot``),
  ``b``, ``c``, and the **query** (all the rest). New items with fewer interactions are counted
  and unused — they never reach training.

**Validation** (for choosing hyper-parameters without the test items): ``val_items`` > 0 holds out
that fraction of the old items with enough rows for a task (drawn with ``split_seed``): their rows
leave training, and with ``evaluate="validation"`` they are the evaluated tasks (same phases) while
the new items stay out of everything.

All of it is vectorized over the log's arrays (no per-row Python objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np

from metarec.recsys.split import hold_out, parse_cut, parse_year
from metarec.data.corpus import DataError
from metarec.recsys.ctr.log import ClickLog

#: Phase codes of a test row: warm-up batches a, b, c, then the query.
PHASE_A, PHASE_B, PHASE_C, PHASE_QUERY = 0, 1, 2, 3
#: Evaluation phases: before any warm-up, then after each warm-up batch.
PHASES = ("cold", "a", "b", "c")


@dataclass
class CTRSplit:
    """Rows of the log by role.

    Attributes:
        new_item: ``(n_items,)`` bool, the item is new.
        train_rows: rows of old items (less validation items), ``(n_train,)`` — the only rows training sees.
        meta_items: old items with ``>= 2 * k_shot`` rows (meta-training tasks).
        test_items: the evaluated tasks: new items with enough rows (or the validation items), ``(n_test,)``.
        test_rows: rows of the test items in item-then-time order, ``(m,)``.
        test_task: task position (into ``test_items``) of every test row, ``(m,)``.
        test_phase: :data:`PHASE_A` … :data:`PHASE_QUERY` of every test row, ``(m,)`` int8.
        k_shot: rows per warm-up batch.
        report: what was kept and counted (JSON-friendly).
    """

    new_item: np.ndarray
    train_rows: np.ndarray
    meta_items: np.ndarray
    test_items: np.ndarray
    test_rows: np.ndarray
    test_task: np.ndarray
    test_phase: np.ndarray
    k_shot: int
    report: dict[str, Any] = field(default_factory=dict)


def make_ctr_split(
    log: ClickLog,
    k_shot: int = 10,
    min_query: int = 10,
    new_items: str = "release_year",
    item_year_cut: Optional[int] = None,
    item_year_field: str = "release_year",
    cut: float | int | str = 0.8,
    val_items: float = 0.0,
    evaluate: str = "test",
    split_seed: int = 0,
) -> CTRSplit:
    """Splits a click log into training rows and new-item test tasks (module docstring).

    Raises:
        ValueError: a bad option.
        DataError: no training row, no meta-training item, or no test item.
    """
    if evaluate not in ("test", "validation"):
        raise ValueError(f"evaluate must be 'test' or 'validation', got {evaluate!r}")
    if not 0.0 <= val_items < 1.0 or (evaluate == "validation" and val_items == 0.0):
        raise ValueError(f"val_items must be in [0, 1) and > 0 with evaluate='validation', got {val_items}")
    if k_shot < 1 or min_query < 1:
        raise ValueError(f"k_shot and min_query must be >= 1, got k_shot={k_shot}, min_query={min_query}")
    rep: dict[str, Any] = {"new_items": new_items, "k_shot": k_shot, "min_query": min_query}
    if new_items == "release_year":
        if item_year_cut is None:
            raise ValueError("new_items='release_year' needs item_year_cut (e.g. 1997)")
        if item_year_field not in log.item_features:
            raise DataError(f"{log.source}: no item field {item_year_field!r} for new_items='release_year' "
                            f"(item fields: {sorted(log.item_features)})")
        years = np.array([parse_year(v) for v in log.item_features[item_year_field]])
        # An item without a year cannot be placed by date: it counts as old (reported).
        new = ~np.isnan(years) & (years >= item_year_cut)
        rep.update(item_year_cut=item_year_cut, items_without_year_counted_old=int(np.isnan(years).sum()))
    elif new_items == "first_seen":
        t_cut = parse_cut(cut, log.time)
        first = np.full(log.n_items, np.inf)
        np.minimum.at(first, log.item, log.time)
        new = first >= t_cut
        rep.update(cut=t_cut, cut_utc=datetime.fromtimestamp(t_cut, tz=timezone.utc).isoformat())
    else:
        raise ValueError(f"new_items must be 'release_year' or 'first_seen', got {new_items!r}")

    counts = np.bincount(log.item, minlength=log.n_items)
    enough = counts >= 3 * k_shot + min_query
    val = np.zeros(log.n_items, dtype=bool)
    if val_items > 0:
        cand = np.flatnonzero(~new & enough)
        val[hold_out(cand, val_items, np.random.default_rng(split_seed))] = True
    old = ~new & ~val
    train_rows = np.flatnonzero(old[log.item])
    meta_items = np.flatnonzero(old & (counts >= 2 * k_shot))
    kept = (new & enough) if evaluate == "test" else val
    test_items = np.flatnonzero(kept)
    rows = np.flatnonzero(kept[log.item])
    # Item, then time, then file line: each test item's rows in time order.
    rows = rows[np.lexsort((log.line[rows], log.time[rows], log.item[rows]))]
    task_of_item = np.full(log.n_items, -1, dtype=np.int64)
    task_of_item[test_items] = np.arange(len(test_items))
    task = task_of_item[log.item[rows]]
    starts = np.searchsorted(task, np.arange(len(test_items)))
    pos = np.arange(len(rows)) - starts[task]
    phase = np.minimum(pos // k_shot, PHASE_QUERY).astype(np.int8)
    rep.update(
        evaluate=evaluate, validation_items=int(val.sum()),
        items=int(log.n_items), old_items=int((~new).sum()), new_items_count=int(new.sum()),
        train_rows=int(len(train_rows)), meta_items=int(len(meta_items)),
        old_items_too_few_for_meta=int((~new & (counts < 2 * k_shot)).sum()),
        test_items=int(len(test_items)), test_rows=int(len(rows)),  # the evaluated tasks (validation ones if so)
        query_rows=int((phase == PHASE_QUERY).sum()),
        new_items_too_few=int((new & ~enough).sum()),
        new_item_rows_unused=int(counts[new & ~enough].sum()),
    )
    if not len(train_rows) or not len(meta_items):
        raise DataError(f"{log.source}: no old item with >= {2 * k_shot} interactions to train on ({rep})")
    if not len(test_items):
        raise DataError(f"{log.source}: no new item with >= {3 * k_shot + min_query} interactions "
                        f"(3 warm-up batches of k_shot={k_shot} + min_query={min_query}) ({rep})")
    return CTRSplit(new, train_rows, meta_items, test_items, rows, task, phase, int(k_shot), rep)
