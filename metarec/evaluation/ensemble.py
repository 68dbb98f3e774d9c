"""Ensembles of tested models, scored from their per-episode test records.

A test record (:meth:`metarec.algorithms.base.MetaLearner.test_record`) keeps each query's true
and predicted label, not its probabilities, so the ensemble here is a hard majority vote: the
label most members predicted for a query. With an odd number of members over two classes (ARSC)
there is never a tie; otherwise a tie goes to the label the lowest-numbered member predicted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np


def _macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    f1 = []
    for c in range(n_classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1))


def majority_vote(members: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-episode records of the majority vote of several models tested on the same episodes.

    Args:
        members: each model's test records, in episode order (``RunResult.episodes``).

    Returns:
        One record per episode with ``index``, ``task``, ``fingerprint``, ``query_y``, ``pred``
        (the voted labels), ``acc`` and ``f1`` (macro-F1 over the episode's classes).

    Raises:
        ValueError: fewer than two members, or members tested on different episodes (their
            fingerprints or query labels differ), naming the episode.
    """
    if len(members) < 2:
        raise ValueError(f"a vote needs at least two models' test records, got {len(members)}")
    first = members[0]
    out = []
    for i, rec in enumerate(first):
        recs = [m[i] if i < len(m) else None for m in members]
        for k, r in enumerate(recs):
            if r is None or len(members[k]) != len(first) or r["fingerprint"] != rec["fingerprint"] \
                    or r["query_y"] != rec["query_y"]:
                raise ValueError(f"member {k} was not tested on the episodes of member 0 "
                                 f"(episode {i}, task {rec['task']!r}): a vote needs the same fixed test episodes")
        y = np.asarray(rec["query_y"])
        preds = np.asarray([r["pred"] for r in recs])  # (members, queries)
        voted = np.empty(len(y), dtype=np.int64)
        for q in range(len(y)):
            counts = Counter(preds[:, q].tolist())
            top = max(counts.values())
            voted[q] = next(int(p) for p in preds[:, q] if counts[int(p)] == top)  # tie: lowest member's label
        n_classes = len(rec.get("classes") or []) or int(max(y.max(), voted.max()) + 1)
        out.append({"index": rec["index"], "task": rec["task"], "fingerprint": rec["fingerprint"],
                    "query_y": y.tolist(), "pred": voted.tolist(), "acc": float((voted == y).mean()),
                    "f1": _macro_f1(y, voted, n_classes)})
    return out
