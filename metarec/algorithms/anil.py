"""ANIL — Almost No Inner Loop (Raghu et al., ICLR 2020, arXiv:1909.09157).

The inner loop adapts only the linear head on fixed support features; the encoder's trainable
layers learn in the outer loop. Much cheaper than MAML: the encoder runs once per episode.
"""

from __future__ import annotations

from typing import Any, Optional

import learn2learn as l2l
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.algorithms.base import MetaLearner
from metarec.episode import Episode
from metarec.models.heads import LinearHead
from metarec.registry import ALGORITHMS


@ALGORITHMS.register("anil")
class ANIL(MetaLearner):
    """Inner loop on the head only.

    Args:
        inner_lr: inner-loop SGD step size of the head.
        inner_steps: inner steps in meta-training.
        eval_inner_steps: inner steps at validation/test (default: ``inner_steps``).
        first_order: drop second-order terms of the head's inner loop.
        **kwargs: see :class:`MetaLearner`.
    """

    def __init__(
        self,
        inner_lr: float = 0.1,
        inner_steps: int = 5,
        eval_inner_steps: Optional[int] = None,
        first_order: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.eval_inner_steps = int(eval_inner_steps if eval_inner_steps is not None else inner_steps)
        self.first_order = bool(first_order)
        self.head = self.wrap(LinearHead(self.encoder.dim, self.n_way))

    def wrap(self, module: nn.Module) -> nn.Module:
        return l2l.algorithms.MAML(module, lr=self.inner_lr, first_order=self.first_order)

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        support, query = self.embed_episode(episode)
        training = self.training
        steps = self.inner_steps if training else self.eval_inner_steps
        with torch.enable_grad():
            learner = self.head.clone()  # type: ignore[operator]
            for _ in range(steps):
                learner.adapt(F.cross_entropy(learner(support), episode.support_y),
                              first_order=self.first_order or not training)
            with torch.set_grad_enabled(training):
                logits = learner(query)
                loss = F.cross_entropy(logits, episode.query_y)
        return loss, logits
