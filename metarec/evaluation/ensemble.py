"""Ensembles of models: a hard vote over their test records, and a weight soup.

:func:`majority_vote` combines tested models. A test record
(:meth:`metarec.algorithms.base.MetaLearner.test_record`) keeps each query's true and predicted
label, not its probabilities, so that ensemble is a hard majority vote: the label most members
predicted for a query. With an odd number of members over two classes (ARSC)
there is never a tie; otherwise a tie goes to the label the lowest-numbered member predicted.

:func:`weight_soup` combines trained models before testing: the element-wise mean of their
weights (a uniform model soup, Wortsman et al., ICML 2022), one model at test time instead of N.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

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


#: Checkpoint entries of a run's training state, which an average of weights does not have.
TRAINING_STATE_KEYS = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "metarec_rng")


def weight_soup(checkpoints: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """A weights-only checkpoint whose weights are the mean of several checkpoints' weights.

    Floating-point tensors are averaged element-wise (summed in float64, stored in their dtype);
    any other tensor must be equal in every member. The result keeps member 0's other entries
    (identity, step, metarec's metadata) but none of its training state
    (:data:`TRAINING_STATE_KEYS`): it can be tested, not resumed. ``metarec_soup`` lists the members.

    Args:
        checkpoints: loaded, verified Lightning checkpoints of runs of one configuration (seeds).
        names: what to call each member in messages and in ``metarec_soup`` (their paths).

    Raises:
        ValueError: fewer than two members, or a member whose weights differ from member 0's in
            names, shapes or dtypes, or whose non-float tensor differs, naming the member and key.
    """
    if len(checkpoints) < 2:
        raise ValueError(f"a soup needs at least two checkpoints, got {len(checkpoints)}")
    if len(names) != len(checkpoints):
        raise ValueError(f"{len(names)} names for {len(checkpoints)} checkpoints")
    first = checkpoints[0]["state_dict"]
    for name, ck in zip(names[1:], checkpoints[1:]):
        sd = ck["state_dict"]
        if sd.keys() != first.keys():
            extra = sorted(set(sd) ^ set(first))
            raise ValueError(f"{name} has other weights than {names[0]}: {extra[0]!r}"
                             f"{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}")
        for k, v in first.items():
            if sd[k].shape != v.shape or sd[k].dtype != v.dtype:
                raise ValueError(f"{name}: weight {k!r} is {sd[k].dtype} {tuple(sd[k].shape)}, "
                                 f"{names[0]} has {v.dtype} {tuple(v.shape)}")
            if not v.is_floating_point() and not torch.equal(sd[k], v):
                raise ValueError(f"{name}: weight {k!r} ({v.dtype}) differs from {names[0]}'s and cannot be averaged")
    state = {}
    for k, v in first.items():
        if v.is_floating_point():
            total = sum(ck["state_dict"][k].double() for ck in checkpoints)
            state[k] = (total / len(checkpoints)).to(v.dtype)
        else:
            state[k] = v.clone()
    out = {k: v for k, v in checkpoints[0].items() if k not in TRAINING_STATE_KEYS and k != "state_dict"}
    out["state_dict"] = state
    out["metarec_soup"] = [str(n) for n in names]
    return out
