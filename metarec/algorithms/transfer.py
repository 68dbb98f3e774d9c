"""Baseline and Baseline++ (Chen et al., ICLR 2019, "A Closer Look at Few-shot Classification",
arXiv:1904.04232): plain supervised pre-training on all meta-training classes, then a new
classifier per test episode.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.algorithms.base import MetaLearner, concat_inputs
from metarec.algorithms.finetune import copy_top, seeded, train_on_support
from metarec.algorithms.linear_probe import fit_head
from metarec.data.family import TaskFamily
from metarec.data.sampler import stream_seed
from metarec.episode import Episode
from metarec.log import get_logger
from metarec.models.heads import LinearHead, class_means
from metarec.registry import ALGORITHMS

log = get_logger(__name__)

HEADS = ("linear", "cosine")
TRAIN_SOFTMAX = ("all", "episode")
TEST_HEADS = ("fit", "prior")
PRIOR_MATCH = ("label", "subtask")
PRIOR_WEIGHTING = ("mean", "support")


def prior_key(class_name: str, match: str) -> str:
    """The part of a class name that transfers across tasks, for a label-aware test head.

    Class names of multi-task families read ``"<task>:<label>"`` (ARSC:
    ``"apparel.t2:negative"``). ``match="label"`` keys on the label (``"negative"``);
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


class CosineHead(nn.Module):
    """Scaled cosine-similarity classifier ``(batch, dim) -> (batch, n_way)`` (Baseline++).

    Logits are ``scale * cos(z, w_c)``: every class weight is compared by angle only, which
    Chen et al. find reduces intra-class variation of the learned features.
    """

    def __init__(self, dim: int, n_way: int, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(n_way, dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * F.normalize(z, dim=-1) @ F.normalize(self.weight, dim=-1).T


@ALGORITHMS.register("baseline")
class Baseline(MetaLearner):
    """Multi-task pre-training on the meta-training classes, a new head per test episode.

    Training (the multi-task stage) ignores the episode structure: every training step pools
    the support and query rows of its meta-batch of training episodes and trains the encoder's
    trainable part (freeze policy) plus one classifier over *all* meta-training classes,
    using the family's global class ids. Drawing the rows from the datamodule's training
    stream keeps the stream's seeding, DDP sharding and resume, and guarantees that only
    training-split rows are used; :meth:`global_labels` additionally refuses any class that is
    not a meta-training class (a test relies on it).

    Validation and test: the pre-trained encoder embeds the episode, a new head is fitted on
    the support set inside :meth:`episode_forward` (timed in ``test/adapt_s``) by full-batch
    L-BFGS — a logistic regression for ``head="linear"`` (Baseline), a cosine classifier
    initialized at the normalized support prototypes for ``head="cosine"`` (Baseline++). The
    pre-training head is discarded.

    The class list comes from the datamodule's family in :meth:`setup` (or an explicit
    :meth:`bind_family` call), before optimizers and checkpoint loading need the head.

    Args:
        head: ``"linear"`` or ``"cosine"`` (both stages).
        scale: logit scale of cosine heads.
        l2: L2 penalty of the per-episode linear head (``mean CE + l2/2 ||W||^2``).
        max_iter: L-BFGS iterations of the per-episode head.
        normalize: L2-normalize embeddings before the per-episode linear fit.
        train_softmax: ``"all"`` — one softmax over every meta-training class (Chen et al.);
            ``"episode"`` — each row competes only with the classes of its own episode (a
            multi-task model with one head per task). Use ``"episode"`` when tasks share
            inputs with conflicting labels (ARSC: one review, three rating thresholds).
        test_head: ``"fit"`` — a fresh logistic regression per test episode (above);
            ``"prior"`` — a linear head on the raw embeddings that starts at the mean of the
            trained class weights whose names share the test class's :func:`prior_key`
            and is fitted on the support with an L2 pull of strength ``prior_l2`` towards
            that start (a MAP estimate under a Gaussian prior centred on what the training
            tasks learned). A class without a matching training class starts from its support
            prototype instead. Linear heads only.
        prior_match: ``"label"`` or ``"subtask"`` (see :func:`prior_key`).
        prior_l2: strength of the pull towards the prior head (``inf``: the prior as it is,
            the support is not used).
        prior_weighting: how the matching training heads are combined into the prior:
            ``"mean"`` — their plain mean; ``"support"`` — Bayesian model averaging over the
            matching training *tasks* (every class of the test episode has a trained row with
            the same :func:`prior_key` and task prefix): task ``j`` gets weight
            ``softmax_j(log p(support | head_j) / prior_temperature)``, so training tasks whose
            heads explain the support (e.g. similar product domains) dominate the prior.
            Falls back to the mean when no training task matches every class.
        prior_temperature: tempers the support log-likelihoods of ``"support"`` weighting
            (1: the posterior over training heads under a uniform prior; larger: flatter).
        shared_head: ``None`` — the multi-task stage trains one head row per training class;
            ``"label"`` or ``"subtask"`` — one row per :func:`prior_key` shared by every training
            task (ARSC with ``"subtask"``: six rows, ``t2/t4/t5 x negative/positive``), so the
            encoder learns features that one head per key separates in every domain, which is
            how a ``test_head="prior"`` head uses them. The prior of a test class is then its
            key's row.
        logit_adjust: ``tau`` of post-hoc logit adjustment (Menon et al., ICLR 2021, "Long-tail
            learning via logit adjustment", arXiv:2007.07314). Training episodes and supports
            are class-balanced, so the fitted head's logits assume a uniform class prior; a
            query set follows its task's natural label frequencies (ARSC: 61-89% positive by
            threshold). With ``tau > 0`` every val/test logit gets ``tau * log pi_c``, where
            ``pi_c`` is the natural frequency of class ``c``'s :func:`prior_key` over the
            meta-training tasks (rows of training classes with that key / rows of their tasks),
            renormalized over the episode's classes. ``1`` is the Bayes correction for a
            calibrated head; ``0`` (default) leaves logits as they are. An episode with a class
            whose key no training class has is left unadjusted (one warning).
        adapt_steps: with ``test_head="prior"``, after the head's fit, fine-tune a copy of the
            encoder's trainable top and the head on the support for this many full-batch
            AdamW steps (the L2 pull on the head stays on), then embed the queries with the
            adapted copy — LP-FT (Kumar et al. 2022, arXiv:2202.10054) from the prior head.
            The encoder itself is never written.
        adapt_lr: learning rate of the top layers in those steps.
        adapt_head_lr: learning rate of the head in those steps.
        seed: seeds dropout during test-time adaptation, per episode.
        **kwargs: see :class:`MetaLearner`.
    """

    head_default: ClassVar[str] = "linear"

    def __init__(
        self,
        head: Optional[str] = None,
        scale: float = 10.0,
        l2: float = 1e-3,
        max_iter: int = 100,
        normalize: bool = True,
        train_softmax: str = "all",
        test_head: str = "fit",
        prior_match: str = "label",
        prior_l2: float = 1.0,
        prior_weighting: str = "mean",
        prior_temperature: float = 1.0,
        shared_head: Optional[str] = None,
        logit_adjust: float = 0.0,
        adapt_steps: int = 0,
        adapt_lr: float = 1e-4,
        adapt_head_lr: float = 1e-3,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.head_kind = head or self.head_default
        if self.head_kind not in HEADS:
            raise ValueError(f"{type(self).__name__} head must be one of {HEADS}, got {self.head_kind!r}")
        for option, value, allowed in (("train_softmax", train_softmax, TRAIN_SOFTMAX),
                                       ("test_head", test_head, TEST_HEADS), ("prior_match", prior_match, PRIOR_MATCH),
                                       ("prior_weighting", prior_weighting, PRIOR_WEIGHTING)):
            if value not in allowed:
                raise ValueError(f"{type(self).__name__} {option} must be one of {allowed}, got {value!r}")
        if shared_head is not None and shared_head not in PRIOR_MATCH:
            raise ValueError(f"{type(self).__name__} shared_head must be None or one of {PRIOR_MATCH}, got {shared_head!r}")
        if shared_head is not None and prior_weighting == "support":
            raise ValueError(f"{type(self).__name__} prior_weighting='support' weighs per-task heads; "
                             f"shared_head={shared_head!r} trains none")
        if test_head == "prior" and self.head_kind != "linear":
            raise ValueError(f"{type(self).__name__} test_head='prior' needs head='linear', got {self.head_kind!r}")
        if prior_l2 < 0:
            raise ValueError(f"{type(self).__name__} prior_l2 must be >= 0, got {prior_l2}")
        self.train_softmax = train_softmax
        self.test_head = test_head
        self.prior_match = prior_match
        self.prior_l2 = float(prior_l2)
        if not prior_temperature > 0:
            raise ValueError(f"{type(self).__name__} prior_temperature must be > 0, got {prior_temperature}")
        self.prior_weighting = prior_weighting
        self.shared_head = shared_head
        self.prior_temperature = float(prior_temperature)
        if not logit_adjust >= 0:
            raise ValueError(f"{type(self).__name__} logit_adjust must be >= 0, got {logit_adjust}")
        self.logit_adjust = float(logit_adjust)
        if adapt_steps < 0:
            raise ValueError(f"{type(self).__name__} adapt_steps must be >= 0, got {adapt_steps}")
        if adapt_steps and test_head != "prior":
            raise ValueError(f"{type(self).__name__} adapt_steps needs test_head='prior'")
        self.adapt_steps = int(adapt_steps)
        self.adapt_lr = float(adapt_lr)
        self.adapt_head_lr = float(adapt_head_lr)
        self.seed = int(seed)
        self.scale = float(scale)
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        self.normalize = bool(normalize)
        self.train_classes: list[str] = []
        #: What each row of the training head stands for: a training class, or a shared key.
        self.head_rows: list[str] = []
        self.family_name = ""
        self._head_row: dict[str, int] = {}     # head_rows entry -> its row
        self._class_index: dict[str, int] = {}  # training class name -> head row
        #: Natural frequency of each prior key over the meta-training tasks (``logit_adjust``).
        self.key_frequency: dict[str, float] = {}
        self._warned_unadjusted = False
        self.train_head: Optional[nn.Module] = None
        #: Names of every class the multi-task stage has trained on (tests check it).
        self.seen_classes: set[str] = set()

    # -- the global label space -------------------------------------------------------------
    def _make_head(self, n_classes: int) -> nn.Module:
        if self.head_kind == "cosine":
            return CosineHead(self.encoder.dim, n_classes, self.scale)
        # Not zero-initialized: a zero head sends no gradient to the encoder at first.
        return LinearHead(self.encoder.dim, n_classes, zero_init=False)

    def bind_family(self, family: TaskFamily) -> None:
        """Builds the pre-training classifier over the meta-training classes of ``family``."""
        names = [family.class_names[c] for c in family.split_classes("train")]
        if len(set(family.class_names)) != len(family.class_names):
            raise ValueError(f"family {family.name!r} has duplicated class names; {type(self).__name__} maps names to ids")
        if self.train_head is not None:
            if names != self.train_classes:
                raise RuntimeError(f"{type(self).__name__} is bound to the training classes of family "
                                   f"{self.family_name!r} and cannot be re-bound to {family.name!r}")
            return
        self.family_name = family.name
        self.train_classes = names
        if self.shared_head is None:
            self.head_rows = names
        else:
            self.head_rows = sorted({prior_key(n, self.shared_head) for n in names})
        self._head_row = {r: i for i, r in enumerate(self.head_rows)}
        self._class_index = {n: self._head_row[n if self.shared_head is None else prior_key(n, self.shared_head)]
                             for n in names}
        self.train_head = self._make_head(len(self.head_rows)).to(self.device)
        self.key_frequency = key_frequencies(family, self.prior_match)

    def setup(self, stage: str) -> None:
        if self.train_head is not None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        family = getattr(dm, "family", None)
        if family is None:
            raise RuntimeError(f"{type(self).__name__} needs the family's class list: run it with an "
                               "EpisodicDataModule, or call bind_family(family) before fit/test")
        self.bind_family(family)

    def global_labels(self, episode: Episode) -> Tensor:
        """Training-head row of each episode label ``(n_way,)``; only meta-training classes."""
        ids = []
        for name in episode.classes:
            if name not in self._class_index:
                raise RuntimeError(
                    f"{type(self).__name__}: episode {episode.index} (task {episode.task!r}, family "
                    f"{episode.family!r}) holds class {name!r}, which is not a meta-training class of "
                    f"{self.family_name!r}; the multi-task stage must never see validation or test classes"
                )
            ids.append(self._class_index[name])
        if len(set(ids)) < len(ids):
            raise RuntimeError(f"{type(self).__name__}: episode {episode.index} (task {episode.task!r}) has classes "
                               f"{list(episode.classes)} that share a head row under shared_head={self.shared_head!r}")
        return torch.tensor(ids, dtype=torch.long, device=episode.support_y.device)

    # -- multi-task stage -------------------------------------------------------------------
    def training_step(self, batch: list[Episode], batch_idx: int) -> Tensor:
        if self.train_head is None:
            raise RuntimeError(f"{type(self).__name__}.training_step before bind_family/setup")
        x: Any = None
        ys, episode_ids = [], []
        for episode in batch:
            ids = self.global_labels(episode)
            ep_x = concat_inputs(episode.support_x, episode.query_x)
            x = ep_x if x is None else concat_inputs(x, ep_x)
            ys.append(ids[torch.cat([episode.support_y, episode.query_y])])
            episode_ids.append(ids)
            self.seen_classes.update(episode.classes)
        y = torch.cat(ys)
        logits = self.train_head(self.encoder(x))
        if self.train_softmax == "episode":
            # Mask every class outside a row's own episode: one binary (n_way) softmax per task.
            allowed = torch.zeros_like(logits, dtype=torch.bool)
            start = 0
            for rows, ids in zip(ys, episode_ids):
                allowed[start : start + len(rows), ids] = True
                start += len(rows)
            logits = logits.masked_fill(~allowed, float("-inf"))
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/acc", self._accuracy(logits.detach(), y), prog_bar=True, batch_size=len(batch))
        return loss

    # -- a new head per episode -------------------------------------------------------------
    def prior_head(self, episode: Episode, support: Tensor) -> tuple[Tensor, Tensor]:
        """Start ``(W0 (n_way, dim), b0 (n_way,))`` of a ``test_head="prior"`` head.

        Class ``c`` starts at the mean trained weight and bias of the training classes with the
        same :func:`prior_key` (with ``shared_head``, at its key's row); without one, at its
        support prototype (nearest-prototype rule).
        """
        assert isinstance(self.train_head, LinearHead)
        lin = self.train_head.linear
        if self.prior_weighting == "support":
            weighted = self._support_weighted_prior(episode, support)
            if weighted is not None:
                return weighted
        keys = [prior_key(n, self.prior_match) for n in self.train_classes]
        protos = class_means(support, episode.support_y, episode.n_way)
        ws, bs = [], []
        for c, name in enumerate(episode.classes):
            key = prior_key(name, self.prior_match)
            if self.shared_head is not None:
                row = self._head_row.get(prior_key(name, self.shared_head))
                idx = [] if row is None else [row]
            else:
                idx = [i for i, k in enumerate(keys) if k == key and self.train_classes[i] != name]
            if idx:
                ws.append(lin.weight[idx].float().mean(0))
                bs.append(lin.bias[idx].float().mean())
            else:
                ws.append(protos[c])
                bs.append(-0.5 * protos[c].pow(2).sum())
        return torch.stack(ws).detach(), torch.stack(bs).detach()

    def _support_weighted_prior(self, episode: Episode, support: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        """``prior_weighting="support"``: posterior-weighted mean of the matching training heads.

        Returns ``(W0 (n_way, dim), b0 (n_way,))``, or ``None`` when no training task has a
        matching class for every class of the episode.
        """
        assert isinstance(self.train_head, LinearHead)
        lin = self.train_head.linear
        keys = [prior_key(name, self.prior_match) for name in episode.classes]
        # A training task is a candidate when "<prefix><key>" is a trained class for every key.
        prefixes = sorted({n[: len(n) - len(keys[0])] for n in self.train_classes
                           if n.endswith(keys[0]) and prior_key(n, self.prior_match) == keys[0]})
        rows = []
        for prefix in prefixes:
            names = [prefix + k for k in keys]
            if all(n in self._class_index for n in names) and not set(names) & set(episode.classes):
                rows.append([self._class_index[n] for n in names])
        if not rows:
            return None
        idx = torch.tensor(rows, device=lin.weight.device)            # (n_tasks, n_way)
        w, b = lin.weight[idx].float(), lin.bias[idx].float()        # (n_tasks, n_way, dim), (n_tasks, n_way)
        logits = torch.einsum("sd,tcd->tsc", support, w) + b[:, None, :]
        loglik = -F.cross_entropy(logits.transpose(1, 2), episode.support_y.expand(len(rows), -1),
                                  reduction="none").sum(-1)          # (n_tasks,)
        weights = torch.softmax(loglik / self.prior_temperature, dim=0)
        return (weights[:, None, None] * w).sum(0).detach(), (weights[:, None] * b).sum(0).detach()

    def fit_prior_head(self, episode: Episode, support: Tensor) -> tuple[LinearHead, Tensor, Tensor]:
        """The ``test_head="prior"`` head (MAP fit on the support under a Gaussian prior) and its prior."""
        w0, b0 = self.prior_head(episode, support)
        head = LinearHead(support.shape[1], episode.n_way).to(support.device)
        with torch.no_grad():
            head.linear.weight.copy_(w0)
            head.linear.bias.copy_(b0)
        if not math.isinf(self.prior_l2):
            fit_head(head, support, episode.support_y, l2=self.prior_l2, max_iter=self.max_iter,
                     center={"linear.weight": w0, "linear.bias": b0})
        return head, w0, b0

    def adapt_on_support(self, episode: Episode, head: LinearHead, w0: Tensor, b0: Tensor) -> Tensor:
        """Test-time fine-tuning of a copy of the top and ``head``; returns query logits."""
        if math.isinf(self.prior_l2):
            for p in head.parameters():
                p.requires_grad_(False)

        def penalty() -> Tensor:
            if math.isinf(self.prior_l2):
                return torch.zeros((), device=w0.device)
            lin = head.linear
            return 0.5 * self.prior_l2 * ((lin.weight - w0).pow(2).sum() + (lin.bias - b0).pow(2).sum())

        # The encoder's own weights are never written: a copy of its top trains, then is dropped.
        top, params = copy_top(self.encoder)
        with seeded(stream_seed(self.seed, type(self).__name__, episode.index), episode.support_y.device):
            train_on_support(self.encoder, top, params, episode.support_x, episode.support_y, head,
                             steps=self.adapt_steps, lr=self.adapt_lr, head_lr=self.adapt_head_lr, penalty=penalty)
        with torch.no_grad():
            return head(self.encoder(episode.query_x, top=top).float())

    def adjust_logits(self, episode: Episode, logits: Tensor) -> Tensor:
        """``logits (n, n_way) + logit_adjust * log pi`` (see ``logit_adjust``)."""
        if not self.logit_adjust:
            return logits
        keys = [prior_key(name, self.prior_match) for name in episode.classes]
        missing = [name for name, key in zip(episode.classes, keys) if key not in self.key_frequency]
        if missing:
            # Like prior_head's prototype fallback: no training class to learn a frequency from,
            # so the uniform prior the head already assumes stays.
            if not self._warned_unadjusted:
                log.warning("%s logit_adjust=%s: class(es) %s of episode %d (task %r) have no meta-training class "
                            "with the same prior_match=%r key, so its logits are not adjusted (and so for any "
                            "such episode); keys with frequencies: %s", type(self).__name__, self.logit_adjust,
                            missing, episode.index, episode.task, self.prior_match, sorted(self.key_frequency))
                self._warned_unadjusted = True
            return logits
        pi = torch.tensor([self.key_frequency[k] for k in keys], dtype=logits.dtype, device=logits.device)
        return logits + self.logit_adjust * torch.log(pi / pi.sum())

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            support, query = self.embed_episode(episode)
        support, query = support.float(), query.float()
        n_way = episode.n_way
        head: nn.Module
        if self.test_head == "prior":
            head, w0, b0 = self.fit_prior_head(episode, support)
            if self.adapt_steps:
                logits = self.adjust_logits(episode, self.adapt_on_support(episode, head, w0, b0))
                return F.cross_entropy(logits, episode.query_y), logits
        elif self.head_kind == "cosine":
            head = CosineHead(support.shape[1], n_way, self.scale).to(support.device)
            with torch.no_grad():
                head.weight.copy_(F.normalize(class_means(support, episode.support_y, n_way), dim=-1))
            # No penalty: a cosine head's weight norms do not change its logits.
            fit_head(head, support, episode.support_y, l2=0.0, max_iter=self.max_iter)
        else:
            if self.normalize:
                support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
            head = LinearHead(support.shape[1], n_way).to(support.device)
            fit_head(head, support, episode.support_y, l2=self.l2, max_iter=self.max_iter)
        with torch.no_grad():
            logits = self.adjust_logits(episode, head(query))
        return F.cross_entropy(logits, episode.query_y), logits


@ALGORITHMS.register("baseline_pp")
class BaselinePP(Baseline):
    """Baseline++: :class:`Baseline` with cosine classifiers in both stages."""

    head_default = "cosine"
