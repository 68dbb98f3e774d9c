"""Parts of the ARSC recipe: a test task's head from the heads the training tasks learned.

Class names of multi-task families read ``"<task>:<label>"`` (ARSC: ``"apparel.t2:negative"``).
The part of a name that transfers across tasks — its :func:`prior_key` — ties a test class to
the training classes that mean the same thing (``"t2:negative"``: the same rating threshold and
label in another product domain). On that key rest:

* :func:`mean_prior` / :func:`support_weighted_prior` — the start of a test task's head, from the
  trained rows of matching training classes (plain mean, or weighted by how well each training
  task's head explains the support);
* :func:`map_head` — the test-time fit: a head refitted on the support with an L2 pull towards
  that start (a MAP estimate under a Gaussian prior);
* :class:`LogitAdjustment` — post-hoc logit adjustment by the training tasks' natural class
  frequencies of the same key (:func:`key_frequencies`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.algorithms.fitting import fit_head
from metarec.data.family import TaskFamily
from metarec.episode import Episode
from metarec.log import get_logger
from metarec.models.heads import LinearHead, class_means

log = get_logger(__name__)

PRIOR_MATCH = ("label", "subtask")


def prior_key(class_name: str, match: str) -> str:
    """The part of a class name that transfers across tasks.

    ``match="label"`` keys on the label (``"apparel.t2:negative"`` -> ``"negative"``);
    ``match="subtask"`` on everything after the task's first dot (``"t2:negative"``: the
    rating threshold and the label), for families whose task names are ``<domain>.<subtask>``.
    """
    if match == "label":
        return class_name.rsplit(":", 1)[-1]
    return class_name.split(".", 1)[-1]


def key_frequencies(family: TaskFamily, match: str) -> dict[str, float]:
    """Natural frequency of every :func:`prior_key` over ``family``'s meta-training tasks.

    For key ``k``: the rows labelled with a training class whose key is ``k``, over all rows of
    the tasks holding such a class (ARSC with ``"subtask"``: ``"t5:positive"`` -> the share of
    positive reviews over every training domain's t5 rows).
    """
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    for task in family.tasks("train"):
        ids, counts = np.unique(task.labels, return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist()):
            key = prior_key(family.class_names[c], match)
            hits[key] = hits.get(key, 0) + int(n)
            totals[key] = totals.get(key, 0) + len(task.labels)
    return {k: hits[k] / totals[k] for k in sorted(hits)}


def mean_prior(weight: Tensor, bias: Tensor, rows: Sequence[Sequence[int]], support: Tensor,
               support_y: Tensor) -> tuple[Tensor, Tensor]:
    """Start ``(W0 (n_way, dim), b0 (n_way,))`` of a test head: per class, the mean of its trained rows.

    Args:
        weight: trained head weights ``(n_rows, dim)``.
        bias: trained head biases ``(n_rows,)``.
        rows: per test class, the trained rows that match it (empty: none matches, and the class
            starts at its support prototype, the nearest-prototype rule).
        support: support embeddings ``(n_way * n_shot, dim)``.
        support_y: support labels ``(n_way * n_shot,)``.
    """
    protos = class_means(support, support_y, len(rows))
    ws, bs = [], []
    for c, idx in enumerate(rows):
        if idx:
            ws.append(weight[list(idx)].float().mean(0))
            bs.append(bias[list(idx)].float().mean())
        else:
            ws.append(protos[c])
            bs.append(-0.5 * protos[c].pow(2).sum())
    return torch.stack(ws).detach(), torch.stack(bs).detach()


def support_weighted_prior(weight: Tensor, bias: Tensor, task_rows: Sequence[Sequence[int]], support: Tensor,
                           support_y: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Bayesian model averaging over matching training tasks' heads.

    Training task ``j`` (its rows ``task_rows[j]``, one per test class) gets weight
    ``softmax_j(log p(support | head_j) / temperature)``, so training tasks whose heads explain
    the support (e.g. similar product domains) dominate the prior.

    Args:
        weight: trained head weights ``(n_rows, dim)``.
        bias: trained head biases ``(n_rows,)``.
        task_rows: ``(n_tasks, n_way)`` row indices, at least one task.
        support: support embeddings ``(n_way * n_shot, dim)``.
        support_y: support labels ``(n_way * n_shot,)``.
        temperature: tempers the support log-likelihoods (1: the posterior under a uniform
            prior over training heads; larger: flatter).

    Returns:
        ``(W0 (n_way, dim), b0 (n_way,))``.
    """
    idx = torch.tensor([list(r) for r in task_rows], device=weight.device)   # (n_tasks, n_way)
    w, b = weight[idx].float(), bias[idx].float()                          # (n_tasks, n_way, dim), (n_tasks, n_way)
    logits = torch.einsum("sd,tcd->tsc", support, w) + b[:, None, :]
    loglik = -F.cross_entropy(logits.transpose(1, 2), support_y.expand(len(task_rows), -1),
                              reduction="none").sum(-1)                    # (n_tasks,)
    weights = torch.softmax(loglik / temperature, dim=0)
    return (weights[:, None, None] * w).sum(0).detach(), (weights[:, None] * b).sum(0).detach()


def map_head(w0: Tensor, b0: Tensor, support: Tensor, support_y: Tensor, l2: float, max_iter: int) -> LinearHead:
    """A linear head started at ``(w0, b0)`` and fitted on the support with an L2 pull towards it.

    ``l2 = inf`` keeps the prior as it is (the support is not used).

    Args:
        w0: prior weights ``(n_way, dim)``.
        b0: prior biases ``(n_way,)``.
        support: support embeddings ``(n_way * n_shot, dim)``.
        support_y: support labels ``(n_way * n_shot,)``.
        l2: strength of the pull towards ``(w0, b0)``.
        max_iter: L-BFGS iterations.
    """
    head = LinearHead(support.shape[1], w0.shape[0]).to(support.device)
    with torch.no_grad():
        head.linear.weight.copy_(w0)
        head.linear.bias.copy_(b0)
    if not math.isinf(l2):
        fit_head(head, support, support_y, l2=l2, max_iter=max_iter, center={"linear.weight": w0, "linear.bias": b0})
    return head


class LogitAdjustment:
    """Post-hoc logit adjustment (Menon et al., ICLR 2021, "Long-tail learning via logit
    adjustment", arXiv:2007.07314) by the training tasks' natural class frequencies.

    Training episodes and supports are class-balanced, so a fitted head's logits assume a
    uniform class prior; a query set follows its task's natural label frequencies (ARSC: 61-89%
    positive by threshold). Every logit of class ``c`` gets ``tau * log pi_c``, where ``pi_c`` is
    the frequency of ``c``'s :func:`prior_key` (:func:`key_frequencies`), renormalized over the
    episode's classes. ``tau = 1`` is the Bayes correction for a calibrated head; ``0`` leaves
    logits as they are. An episode with a class whose key has no frequency is left unadjusted
    (one warning per instance).

    Args:
        frequency: natural frequency of each key.
        tau: strength of the adjustment (``>= 0``).
        match: the :func:`prior_key` rule the frequencies were counted with.
        transductive: replace ``pi`` by the query set's own prior, estimated by EM from the
            unlabeled queries (:func:`em_class_prior`, started at ``pi``). This reads the test
            queries, so it changes the protocol: report it apart from inductive results.
    """

    def __init__(self, frequency: dict[str, float], tau: float, match: str, transductive: bool = False) -> None:
        if not tau >= 0:
            raise ValueError(f"logit_adjust must be >= 0, got {tau}")
        self.frequency = dict(frequency)
        self.tau = float(tau)
        self.match = match
        self.transductive = bool(transductive)
        self._warned = False

    def __call__(self, episode: Episode, logits: Tensor) -> Tensor:
        """``logits (n, n_way) + tau * log pi`` for ``episode``'s classes."""
        if not self.tau:
            return logits
        keys = [prior_key(name, self.match) for name in episode.classes]
        missing = [name for name, key in zip(episode.classes, keys) if key not in self.frequency]
        if missing:
            # Like the prior's prototype fallback: no training class to learn a frequency from,
            # so the uniform prior the head already assumes stays.
            if not self._warned:
                log.warning("logit_adjust=%s: class(es) %s of episode %d (task %r) have no meta-training class "
                            "with the same prior_match=%r key, so its logits are not adjusted (and so for any "
                            "such episode); keys with frequencies: %s", self.tau, missing, episode.index,
                            episode.task, self.match, sorted(self.frequency))
                self._warned = True
            return logits
        pi = torch.tensor([self.frequency[k] for k in keys], dtype=logits.dtype, device=logits.device)
        if self.transductive:
            pi = em_class_prior(logits, pi)
        return logits + self.tau * torch.log(pi / pi.sum())


def em_class_prior(logits: Tensor, start: Tensor, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """The class prior of an unlabeled query set, by EM (Saerens, Latinne and Decaestecker, Neural
    Computation 2002, "Adjusting the outputs of a classifier to new a priori probabilities").

    Transductive: it reads the queries (never their labels). ``logits`` come from a head that
    assumes a uniform prior (a balanced support); each step re-weights their posteriors by the
    current prior and sets the prior to the mean re-weighted posterior, which is the maximum-
    likelihood prior of the queries under the head.

    Args:
        logits: query logits ``(n_query, n_way)`` of a head trained with a uniform prior.
        start: the prior EM starts from ``(n_way,)`` (e.g. the training frequencies).
        iters: at most this many EM steps.
        tol: stop when no class's prior moves by more than this.

    Returns:
        the estimated prior ``(n_way,)``, summing to 1.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    prior = (start / start.sum()).float()
    for _ in range(iters):
        new = torch.softmax(log_p + torch.log(prior), dim=1).mean(0)
        done = bool((new - prior).abs().max() < tol)
        prior = new
        if done:
            break
    return prior.to(logits.dtype)


def matching_rows(train_classes: Sequence[str], test_classes: Sequence[str], match: str) -> list[list[int]]:
    """Per test class, the positions in ``train_classes`` with the same :func:`prior_key` (itself excluded)."""
    keys = [prior_key(n, match) for n in train_classes]
    out = []
    for name in test_classes:
        key = prior_key(name, match)
        out.append([i for i, k in enumerate(keys) if k == key and train_classes[i] != name])
    return out


def key_groups(train_classes: Sequence[str], match: str) -> Tensor:
    """Group id ``(n_rows,)`` of every training class: classes with one :func:`prior_key` share it."""
    keys = [prior_key(n, match) for n in train_classes]
    ids = {k: i for i, k in enumerate(sorted(set(keys)))}
    return torch.tensor([ids[k] for k in keys], dtype=torch.long)


def leave_one_out_rows(weight: Tensor, bias: Tensor, group: Tensor) -> tuple[Tensor, Tensor]:
    """Every head row replaced by the mean of the *other* rows of its group (differentiable).

    With the groups of :func:`key_groups` (ARSC, ``"subtask"``), row ``apparel.t5:positive``
    becomes the mean ``*.t5:positive`` row of every other training domain: the prior head a
    held-out domain starts from at test time. A row alone in its group keeps its own values.

    Args:
        weight: ``(n_rows, dim)``; bias: ``(n_rows,)``; group: ``(n_rows,)`` group ids.
    """
    group = group.to(weight.device)
    n_groups = int(group.max()) + 1
    count = torch.bincount(group, minlength=n_groups)[group]
    others = (count - 1).clamp(min=1).to(weight.dtype)
    w_sum = weight.new_zeros(n_groups, weight.shape[1]).index_add(0, group, weight)[group]
    b_sum = bias.new_zeros(n_groups).index_add(0, group, bias)[group]
    alone = count == 1
    w = torch.where(alone[:, None], weight, (w_sum - weight) / others[:, None])
    b = torch.where(alone, bias, (b_sum - bias) / others)
    return w, b


def matching_tasks(class_index: dict[str, int], test_classes: Sequence[str], match: str) -> list[list[int]]:
    """Training tasks that have a class of every test class's :func:`prior_key`, as head rows.

    A training task is ``<prefix>`` such that ``<prefix><key>`` is a trained class (``class_index``:
    name -> head row) for the key of every test class, and none of those is a test class itself.

    Returns:
        ``(n_tasks, n_way)`` head rows; empty when no training task matches every class.
    """
    keys = [prior_key(name, match) for name in test_classes]
    prefixes = sorted({n[: len(n) - len(keys[0])] for n in class_index
                       if n.endswith(keys[0]) and prior_key(n, match) == keys[0]})
    rows = []
    for prefix in prefixes:
        names = [prefix + k for k in keys]
        if all(n in class_index for n in names) and not set(names) & set(test_classes):
            rows.append([class_index[n] for n in names])
    return rows


def check_match(option: str, value: Optional[str], allow_none: bool = False) -> None:
    """Raises ValueError naming ``option`` unless ``value`` is a :func:`prior_key` rule."""
    if value is None and allow_none:
        return
    if value not in PRIOR_MATCH:
        allowed = f"None or one of {PRIOR_MATCH}" if allow_none else f"one of {PRIOR_MATCH}"
        raise ValueError(f"{option} must be {allowed}, got {value!r}")


def ordinal_rows(class_names: Sequence[str], labels: Sequence[str] = ("negative", "positive")
                 ) -> tuple[list[int], list[int], list[int]]:
    """Group, task and sign of each head row for an :class:`~metarec.models.heads.OrdinalHead`.

    Class names read ``"<group>.<subtask>:<label>"`` (ARSC: ``"apparel.t4:positive"``, group
    ``apparel``, task ``apparel.t4``); ``labels`` orders the two labels of every task, lower first.

    Returns:
        per row, its group index, task index and sign (``-1`` lower label, ``+1`` upper).

    Raises:
        ValueError: naming the first class whose name does not have that form or whose label is
            not one of ``labels``.
    """
    if len(labels) != 2:
        raise ValueError(f"an ordinal head needs two labels per task (lower, upper), got {list(labels)}")
    groups: dict[str, int] = {}
    tasks: dict[str, int] = {}
    out: tuple[list[int], list[int], list[int]] = ([], [], [])
    for name in class_names:
        task, _, label = name.rpartition(":")
        group, dot, _ = task.partition(".")
        if not dot or not group or label not in labels:
            raise ValueError(f"ordinal head: class {name!r} is not '<group>.<subtask>:<label>' with a label in "
                             f"{list(labels)}; the ordinal head needs binary tasks grouped by their name's first part")
        out[0].append(groups.setdefault(group, len(groups)))
        out[1].append(tasks.setdefault(task, len(tasks)))
        out[2].append(1 if label == labels[1] else -1)
    return out
