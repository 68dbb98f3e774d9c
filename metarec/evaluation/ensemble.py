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
import torch
from torchmetrics.functional.classification import multiclass_f1_score


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
        for k, m in enumerate(members):
            if len(m) != len(first) or m[i]["fingerprint"] != rec["fingerprint"] or m[i]["query_y"] != rec["query_y"]:
                raise ValueError(f"member {k} was not tested on the episodes of member 0 "
                                 f"(episode {i}, task {rec['task']!r}): a vote needs the same fixed test episodes")
        recs = [m[i] for m in members]
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
                    # the macro-F1 every test record holds (MetaLearner._macro_f1)
                    "f1": float(multiclass_f1_score(torch.from_numpy(voted), torch.from_numpy(y),
                                                    num_classes=n_classes, average="macro"))})
    return out
