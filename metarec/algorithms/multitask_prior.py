"""The ARSC recipe (docs/arsc.md): a multi-task stage, then per test task a head started at the
trained heads of the same subtask, refitted on the support and logit-adjusted.

Multi-task pre-training as in Chen et al. (ICLR 2019, arXiv:1904.04232) with one softmax per
training task; the test-time head is a MAP fit under a Gaussian prior centred on the training
tasks' heads; logit adjustment after Menon et al. (ICLR 2021, arXiv:2007.07314); optional
test-time fine-tuning of the top layers from that head (LP-FT, Kumar et al. 2022,
arXiv:2202.10054). The parts live in :mod:`metarec.algorithms.task_prior` and
:mod:`metarec.algorithms.fitting`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.algorithms.fitting import copy_top, seeded, train_on_support
from metarec.algorithms.multitask import MultiTaskStage
from metarec.algorithms.task_prior import (LogitAdjustment, check_match, key_frequencies, key_groups,
                                           leave_one_out_rows, map_head, matching_rows, matching_tasks, mean_prior,
                                           ordinal_rows, prior_key, support_weighted_prior)
from metarec.data.family import TaskFamily
from metarec.data.sampler import stream_seed
from metarec.episode import Episode
from metarec.models.heads import LinearHead, OrdinalHead
from metarec.registry import ALGORITHMS

PRIOR_WEIGHTING = ("mean", "support")


@ALGORITHMS.register("multitask_prior")
class MultiTaskPrior(MultiTaskStage):
    """Multi-task stage with one softmax per task, then a prior head per test task.

    Test time, per episode (timed in ``test/adapt_s``): class ``c`` of the test task starts at
    the mean trained head row of the training classes with the same :func:`prior_key` (ARSC with
    ``prior_match="subtask"``: ``books.t4:positive`` starts at the mean of every ``*.t4:positive``
    row), or at its support prototype when none matches; the head is refitted on the support by
    L-BFGS with an L2 pull of strength ``prior_l2`` towards that start; its logits get
    ``logit_adjust * log pi`` (:class:`~metarec.algorithms.task_prior.LogitAdjustment`).

    Args:
        train_softmax: see :class:`MultiTaskStage`; ``"episode"`` here (one binary head per task).
        max_iter: L-BFGS iterations of the test-time head.
        prior_match: ``"label"`` or ``"subtask"`` (see :func:`prior_key`).
        prior_l2: strength of the pull towards the prior head (``inf``: the prior as it is,
            the support is not used).
        prior_weighting: ``"mean"`` — plain mean of the matching training rows; ``"support"`` —
            Bayesian model averaging over the training *tasks* that match every class of the
            episode (:func:`~metarec.algorithms.task_prior.support_weighted_prior`); falls back
            to the mean when none matches.
        prior_temperature: tempers the support log-likelihoods of ``"support"`` weighting.
        shared_head: ``None`` — one training-head row per training class; ``"label"`` or
            ``"subtask"`` — one row per :func:`prior_key`, shared by every training task (ARSC
            with ``"subtask"``: six rows, ``t2/t4/t5 x negative/positive``); a test class's
            prior is then its key's row.
        logit_adjust: ``tau`` of the logit adjustment (``0``: none).
        adapt_steps: after the head's fit, fine-tune a copy of the encoder's trainable top and
            the head on the support for this many full-batch AdamW steps (the L2 pull on the head
            stays on), then embed the queries with the adapted copy. The encoder itself is never
            written.
        adapt_lr: learning rate of the top layers in those steps.
        adapt_head_lr: learning rate of the head in those steps.
        seed: seeds dropout during test-time adaptation, per episode.
        ordinal: train an :class:`~metarec.models.heads.OrdinalHead` instead of one free linear
            row per class: the tasks of a group (ARSC: a domain's t2/t4/t5) share one score and
            differ by a cut. Test-time priors read its per-row weights like a linear head's.
            Needs class names ``"<group>.<subtask>:negative|positive"`` (refused otherwise).
        transductive: logit adjustment by each test task's own class prior, estimated by EM from
            its unlabeled queries (started at the training frequencies) instead of the training
            frequencies. It reads the test queries: a different protocol, reported apart.
        loo_weight: weight of a leave-one-domain-out loss in the multi-task stage: every training
            row is also classified by the mean head of the *other* training tasks with its
            :func:`prior_key` (:func:`~metarec.algorithms.task_prior.leave_one_out_rows`), which
            is how a held-out task is predicted at test time; ``0``: off. The encoder and every
            training head then also learn for that prediction, an episodic objective that
            mirrors the test rule. Not with ``shared_head`` (no per-task rows to leave out).
        **kwargs: see :class:`~metarec.algorithms.base.MetaLearner`.
    """

    def __init__(
        self,
        train_softmax: str = "episode",
        max_iter: int = 100,
        prior_match: str = "subtask",
        prior_l2: float = 30.0,
        prior_weighting: str = "mean",
        prior_temperature: float = 1.0,
        shared_head: Optional[str] = None,
        logit_adjust: float = 1.0,
        adapt_steps: int = 0,
        adapt_lr: float = 1e-4,
        adapt_head_lr: float = 1e-3,
        seed: int = 0,
        ordinal: bool = False,
        transductive: bool = False,
        loo_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(train_softmax=train_softmax, **kwargs)
        name = type(self).__name__
        check_match(f"{name} prior_match", prior_match)
        check_match(f"{name} shared_head", shared_head, allow_none=True)
        if prior_weighting not in PRIOR_WEIGHTING:
            raise ValueError(f"{name} prior_weighting must be one of {PRIOR_WEIGHTING}, got {prior_weighting!r}")
        if shared_head is not None and prior_weighting == "support":
            raise ValueError(f"{name} prior_weighting='support' weighs per-task heads; shared_head={shared_head!r} trains none")
        if ordinal and shared_head is not None:
            raise ValueError(f"{name} ordinal=true trains one score per group; it cannot share rows (shared_head={shared_head!r})")
        if not loo_weight >= 0:
            raise ValueError(f"{name} loo_weight must be >= 0, got {loo_weight}")
        if loo_weight and shared_head is not None:
            raise ValueError(f"{name} loo_weight > 0 leaves one task's row out of its key's mean; "
                             f"shared_head={shared_head!r} trains one row per key")
        if prior_l2 < 0:
            raise ValueError(f"{name} prior_l2 must be >= 0, got {prior_l2}")
        if not prior_temperature > 0:
            raise ValueError(f"{name} prior_temperature must be > 0, got {prior_temperature}")
        if adapt_steps < 0:
            raise ValueError(f"{name} adapt_steps must be >= 0, got {adapt_steps}")
        self.max_iter = int(max_iter)
        self.prior_match = prior_match
        self.prior_l2 = float(prior_l2)
        self.prior_weighting = prior_weighting
        self.prior_temperature = float(prior_temperature)
        self.shared_head = shared_head
        # Frequencies are counted when the family is bound (bind_family).
        if transductive and not logit_adjust:
            raise ValueError(f"{name} transductive=true estimates the prior that logit adjustment applies; "
                             "it needs logit_adjust > 0")
        self.logit_adjustment = LogitAdjustment({}, logit_adjust, prior_match, transductive=transductive)
        self.adapt_steps = int(adapt_steps)
        self.adapt_lr = float(adapt_lr)
        self.adapt_head_lr = float(adapt_head_lr)
        self.seed = int(seed)
        self.ordinal = bool(ordinal)
        self.loo_weight = float(loo_weight)
        self._loo_group: Optional[Tensor] = None  # key group of every training-head row (bind_family)

    # -- shared heads -------------------------------------------------------------------------
    def make_train_head(self, n_rows: int) -> nn.Module:
        if self.ordinal:
            return OrdinalHead(self.encoder.dim, *ordinal_rows(self.head_rows))
        return super().make_train_head(n_rows)

    def row_of_class(self, name: str) -> str:
        return name if self.shared_head is None else prior_key(name, self.shared_head)

    def bind_family(self, family: TaskFamily) -> None:
        first = self.train_head is None
        super().bind_family(family)
        if first:
            self.logit_adjustment.frequency = key_frequencies(family, self.prior_match)
            self._loo_group = key_groups(self.head_rows, self.prior_match)

    def head_loss(self, z: Tensor, y: Tensor, masked: Callable[[Tensor], Tensor],
                  reduction: str = "mean") -> tuple[Tensor, Tensor]:
        loss, logits = super().head_loss(z, y, masked, reduction)
        if self.loo_weight:
            assert isinstance(self.train_head, (LinearHead, OrdinalHead)) and self._loo_group is not None
            weight, bias = leave_one_out_rows(*self.train_head.rows(), self._loo_group)
            loo = masked(F.linear(z, weight, bias))
            loss = loss + self.loo_weight * F.cross_entropy(loo, y, reduction=reduction)
        return loss, logits

    # -- the prior head -----------------------------------------------------------------------
    def prior_head(self, episode: Episode, support: Tensor) -> tuple[Tensor, Tensor]:
        """Start ``(W0 (n_way, dim), b0 (n_way,))`` of the episode's head, from the trained rows."""
        assert isinstance(self.train_head, (LinearHead, OrdinalHead))
        weight, bias = (t.detach() for t in self.train_head.rows())
        if self.prior_weighting == "support":
            tasks = matching_tasks(self._class_index, episode.classes, self.prior_match)
            if tasks:
                return support_weighted_prior(weight, bias, tasks, support, episode.support_y,
                                              self.prior_temperature)
        if self.shared_head is not None:
            keyed = [self._head_row.get(prior_key(n, self.shared_head)) for n in episode.classes]
            rows = [[] if r is None else [r] for r in keyed]
        else:
            rows = matching_rows(self.train_classes, episode.classes, self.prior_match)
        return mean_prior(weight, bias, rows, support, episode.support_y)

    # -- test-time fine-tuning ----------------------------------------------------------------
    def adapt_on_support(self, episode: Episode, head: LinearHead, w0: Tensor, b0: Tensor) -> Tensor:
        """Fine-tunes a copy of the top and ``head`` on the support; returns query logits."""
        if math.isinf(self.prior_l2):
            for p in head.parameters():
                p.requires_grad_(False)

        def penalty() -> Tensor:
            if math.isinf(self.prior_l2):
                return torch.zeros((), device=w0.device)
            lin = head.linear
            return 0.5 * self.prior_l2 * ((lin.weight - w0).pow(2).sum() + (lin.bias - b0).pow(2).sum())

        top, params = copy_top(self.encoder)
        with seeded(stream_seed(self.seed, type(self).__name__, episode.index), episode.support_y.device):
            train_on_support(self.encoder, top, params, episode.support_x, episode.support_y, head,
                             steps=self.adapt_steps, lr=self.adapt_lr, head_lr=self.adapt_head_lr, penalty=penalty)
        with torch.no_grad():
            return head(self.encoder(episode.query_x, top=top).float())

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            support, query = self.embed_episode(episode)
        support, query = support.float(), query.float()
        w0, b0 = self.prior_head(episode, support)
        head = map_head(w0, b0, support, episode.support_y, self.prior_l2, self.max_iter)
        if self.adapt_steps:
            logits = self.adapt_on_support(episode, head, w0, b0)
        else:
            with torch.no_grad():
                logits = head(query)
        logits = self.logit_adjustment(episode, logits)
        return F.cross_entropy(logits, episode.query_y), logits
