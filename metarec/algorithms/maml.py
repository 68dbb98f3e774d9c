"""MAML (Finn et al., ICML 2017, arXiv:1703.03400) and first-order MAML, via learn2learn.

The inner loop adapts the encoder's *trainable top* (the top ``k`` layers, or the whole model
under ``freeze="full"``) and a linear head; frozen layers run outside the inner loop, from
cached states when available. ``first_order=True`` is FOMAML: the outer gradient ignores
second derivatives through the inner steps.
"""

from __future__ import annotations

from typing import Any, Optional

import learn2learn as l2l
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.algorithms.base import MetaLearner
from metarec.episode import Episode
from metarec.models.heads import LinearHead, class_means
from metarec.registry import ALGORITHMS


class _Learner(nn.Module):
    """What the inner loop adapts: the encoder's trainable top and the head."""

    def __init__(self, top: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.top = top
        self.head = head


@ALGORITHMS.register("maml")
class MAML(MetaLearner):
    """Model-Agnostic Meta-Learning with an inner loop over top layers + head.

    Args:
        inner_lr: inner-loop SGD step size.
        inner_steps: inner steps during meta-training.
        eval_inner_steps: inner steps at validation/test (default: ``inner_steps``).
        first_order: FOMAML when True.
        head_init: ``"zeros"`` (the zero-initialized head of MAML++ / Triantafillou et al.) or
            ``"prototypes"`` (Proto-MAML, Triantafillou et al., ICLR 2020, arXiv:1903.03096): the
            head starts as the nearest-prototype rule of the episode's support set
            (``W = 2 c_k``, ``b = -||c_k||^2``), so the inner loop refines a good classifier
            instead of building one from nothing in a few steps.
        **kwargs: see :class:`MetaLearner`.
    """

    first_order_default = False

    def __init__(
        self,
        inner_lr: float = 0.01,
        inner_steps: int = 5,
        eval_inner_steps: Optional[int] = None,
        first_order: Optional[bool] = None,
        head_init: str = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if head_init not in ("zeros", "prototypes"):
            raise ValueError(f"{type(self).__name__} head_init must be 'zeros' or 'prototypes', got {head_init!r}")
        self.head_init = head_init
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.eval_inner_steps = int(eval_inner_steps if eval_inner_steps is not None else inner_steps)
        self.first_order = self.first_order_default if first_order is None else bool(first_order)
        self.head = LinearHead(self.encoder.dim, self.n_way)
        self.learner = self.wrap(_Learner(self.encoder.trainable_top(), self.head))

    def wrap(self, module: nn.Module) -> nn.Module:
        """The learn2learn wrapper providing ``clone()`` and ``adapt(loss)``."""
        return l2l.algorithms.MAML(module, lr=self.inner_lr, first_order=self.first_order, allow_unused=True)

    def _logits(self, learner: nn.Module, x: Any, proto: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
        z = self.encoder(x, top=learner.module.top)  # type: ignore[union-attr]
        logits = learner.module.head(z)  # type: ignore[union-attr]
        if proto is not None:
            # The adapted head is a correction on top of the prototype classifier: its
            # gradient equals the gradient w.r.t. the prototype-initialized weights.
            w0, b0 = proto
            logits = logits + z.float() @ w0.T + b0
        return logits

    def _prototype_head(self, learner: nn.Module, episode: Episode) -> Optional[tuple[Tensor, Tensor]]:
        if self.head_init != "prototypes":
            return None
        z = self.encoder(episode.support_x, top=learner.module.top).float()  # type: ignore[union-attr]
        protos = class_means(z, episode.support_y, episode.n_way)
        return 2 * protos, -(protos**2).sum(-1)

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        training = self.training
        steps = self.inner_steps if training else self.eval_inner_steps
        # Evaluation runs under no_grad; adaptation needs gradients (first order is enough).
        with torch.enable_grad():
            learner = self.learner.clone()  # type: ignore[operator]
            proto = self._prototype_head(learner, episode)
            first_order = self.first_order or not training
            # First-order inner steps free their graph: they see a detached prototype head; the
            # query loss below uses the attached one, so the outer gradient reaches the encoder.
            inner_proto = None if proto is None else tuple(t.detach() for t in proto) if first_order else proto
            for _ in range(steps):
                loss = F.cross_entropy(self._logits(learner, episode.support_x, inner_proto), episode.support_y)
                learner.adapt(loss, first_order=first_order)
            with torch.set_grad_enabled(training):
                logits = self._logits(learner, episode.query_x, proto)
                loss = F.cross_entropy(logits, episode.query_y)
        return loss, logits


@ALGORITHMS.register("fomaml")
class FOMAML(MAML):
    """First-order MAML: as :class:`MAML` with ``first_order=True``."""

    first_order_default = True
