"""Meta-SGD (Li et al. 2017, arXiv:1707.09835): MAML with a learned learning rate per parameter."""

from __future__ import annotations

from typing import Optional

import learn2learn as l2l
from learn2learn.algorithms.meta_sgd import meta_sgd_update
from learn2learn.utils import clone_module, clone_parameters
from torch import Tensor, autograd, nn

from metarec.algorithms.maml import MAML
from metarec.registry import ALGORITHMS


class _MetaSGD(l2l.algorithms.MetaSGD):
    """learn2learn's MetaSGD, tolerant of parameters the loss does not use.

    HF encoders under ``freeze="full"`` hold parameters outside the graph of the loss (e.g.
    BERT's pooler); learn2learn's ``MetaSGD.adapt`` has no ``allow_unused`` (its ``MAML`` has),
    so an unused parameter would abort the inner step. Unused parameters keep their value.
    """

    def clone(self) -> "_MetaSGD":
        return _MetaSGD(clone_module(self.module), lrs=clone_parameters(self.lrs), first_order=self.first_order)

    def adapt(self, loss: Tensor, first_order: Optional[bool] = None) -> None:
        first_order = self.first_order if first_order is None else first_order
        grads = autograd.grad(loss, list(self.module.parameters()), retain_graph=not first_order,
                              create_graph=not first_order, allow_unused=True)
        self.module = meta_sgd_update(self.module, self.lrs, grads)


@ALGORITHMS.register("metasgd")
class MetaSGD(MAML):
    """:class:`~metarec.algorithms.maml.MAML` whose inner step is ``theta - alpha * grad``.

    ``alpha`` has the shape of ``theta`` (one rate per weight of the encoder's trainable top
    and of the head), starts at ``inner_lr`` and is meta-learned in the outer loop with the
    other non-encoder parameters (``outer_lr``). With ``first_order=True`` the rates still
    learn: the query loss depends on ``alpha`` through ``alpha * grad`` even with a detached
    ``grad``. Li et al. use a single inner step (``inner_steps=1``).

    Args:
        **kwargs: see :class:`~metarec.algorithms.maml.MAML`.
    """

    def wrap(self, module: nn.Module) -> nn.Module:
        return _MetaSGD(module, lr=self.inner_lr, first_order=self.first_order)

    @property
    def inner_lrs(self) -> nn.ParameterList:
        """The learned per-parameter inner learning rates (same order as the learner's parameters)."""
        return self.learner.lrs  # type: ignore[return-value]
