"""Recommenders of the cold-start family: MeLU with MAML / FOMAML local updates, the global model,
per-user fine-tuning, and item popularity.

MeLU (Lee et al., KDD 2019, arXiv:1908.00413) is MAML (Finn et al. 2017, arXiv:1703.03400) on a
user-preference network: the embeddings are *global* and the inner loop adapts only the decision
layers and heads to each user's support ratings (learn2learn ``MAML.clone()`` / ``adapt()``).
The baselines differ from it in one switch each:

* ``melu_global``  — the same network trained on the same user tasks with **no** local update
  (query loss of the global weights), evaluated without adaptation.
* ``melu_finetune`` — ``melu_global``'s training, then at test time a few SGD steps on each
  user's support set over the **decision layers and heads** (the parameters MAML adapts, so the
  only difference to MAML is meta-training).
* ``popularity`` — no network: an item's mean training rating (new items: the global training
  mean), like iff that mean ``>= 4``.

What they share (loss, optimizer, logs, test records) is :class:`~metarec.recsys.learner.RatingLearner`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

import learn2learn as l2l
import torch
from torch import Tensor, nn

from metarec.learner import refuse_fixed_options
from metarec.recsys.episode import RatingEpisode
from metarec.recsys.learner import RatingLearner
from metarec.recsys.networks import DecisionLayers, MeLUEmbedding
from metarec.registry import RECOMMENDERS


class _MeLUNet(nn.Module):
    """The global embeddings and the (adaptable) decision layers, as one module for the optimizer."""

    def __init__(self, schema: dict[str, Any], emb_dim: int, hidden: Sequence[int], rating_bias: float) -> None:
        super().__init__()
        self.embed = MeLUEmbedding(schema["user_vocab"], schema["item_vocab"], schema["n_multi"], schema["text_dim"],
                                   emb_dim=emb_dim)
        self.decision = DecisionLayers(self.embed.out_dim, hidden, rating_bias=rating_bias)


@RECOMMENDERS.register("melu_maml")
class MeLU(RatingLearner):
    """MeLU: MAML local update of the decision layers and heads on each user's support set.

    Args:
        inner_lr: local-update SGD step size.
        inner_steps: local-update steps during meta-training (0: no local update — the global model).
        eval_inner_steps: local-update steps at test time (default ``inner_steps``).
        first_order: FOMAML (no second derivatives through the local update).
        emb_dim: width of each field embedding.
        hidden: widths of the decision layers.
        **kwargs: see :class:`RatingLearner`.
    """

    first_order_default: ClassVar[bool] = False

    def __init__(self, inner_lr: float = 0.01, inner_steps: int = 5, eval_inner_steps: Optional[int] = None,
                 first_order: Optional[bool] = None, emb_dim: int = 32, hidden: Sequence[int] = (64, 64),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.eval_inner_steps = int(self.inner_steps if eval_inner_steps is None else eval_inner_steps)
        self.first_order = self.first_order_default if first_order is None else bool(first_order)
        self.net = _MeLUNet(self.schema, emb_dim, list(hidden), rating_bias=self.global_mean)
        # Only the decision layers go through learn2learn: the embeddings stay global (MeLU's local update).
        self.learner = l2l.algorithms.MAML(self.net.decision, lr=self.inner_lr, first_order=self.first_order)

    def task_forward(self, ep: RatingEpisode) -> tuple[Tensor, Tensor, Tensor]:
        steps = self.inner_steps if self.training else self.eval_inner_steps
        zq = self.net.embed(ep.user_x, ep.query_x)
        if steps == 0:
            rating, like = self.net.decision(zq)
            return self.loss(rating, like, ep.query_y), rating, like
        # Test runs under no_grad; the local update needs gradients (first order is enough there).
        with torch.enable_grad():
            learner = self.learner.clone()
            zs = self.net.embed(ep.user_x, ep.support_x)
            first_order = self.first_order or not self.training
            for _ in range(steps):
                rating, like = learner(zs)
                learner.adapt(self.loss(rating, like, ep.support_y), first_order=first_order)
            with torch.set_grad_enabled(self.training):
                rating, like = learner(zq)
                loss = self.loss(rating, like, ep.query_y)
        return loss, rating, like


@RECOMMENDERS.register("melu_fomaml")
class MeLUFirstOrder(MeLU):
    """MeLU with first-order MAML (FOMAML): the outer gradient ignores the local update's Hessian."""

    first_order_default = True


@RECOMMENDERS.register("melu_global")
class GlobalModel(MeLU):
    """The MeLU network trained on the same user tasks without local update; no adaptation at test."""

    fixed_options = {"inner_steps": "melu_global has no local update (it is 0; melu_maml adapts)",
                     "eval_inner_steps": "melu_global does not adapt at test (it is 0; melu_finetune does)"}

    def __init__(self, **kwargs: Any) -> None:
        refuse_fixed_options(type(self), kwargs)
        super().__init__(inner_steps=0, eval_inner_steps=0, **kwargs)


@RECOMMENDERS.register("melu_finetune")
class PerUserFineTune(MeLU):
    """The global model, then ``eval_inner_steps`` SGD steps per user on the decision layers and heads."""

    fixed_options = {"inner_steps": "melu_finetune trains the global model, without local update (it is 0; "
                                    "its test-time steps are eval_inner_steps)"}

    def __init__(self, eval_inner_steps: int = 5, **kwargs: Any) -> None:
        refuse_fixed_options(type(self), kwargs)
        super().__init__(eval_inner_steps=eval_inner_steps, inner_steps=0, **kwargs)


@RECOMMENDERS.register("popularity")
class Popularity(RatingLearner):
    """Item popularity: an item's mean training rating; new items get the global training mean.

    The like score is ``mean - like_threshold`` (a like iff the mean is at least the threshold);
    its order is the mean rating's, which is what AUC and nDCG see.
    """

    trains = False

    def __init__(self, train_stats: dict[str, Any], **kwargs: Any) -> None:
        kwargs.pop("max_steps", None)
        super().__init__(train_stats=train_stats, **kwargs)
        mean = train_stats["item_mean"].clone()
        self.register_buffer("item_mean", torch.where(torch.isnan(mean), torch.tensor(self.global_mean), mean),
                             persistent=False)

    def task_forward(self, ep: RatingEpisode) -> tuple[Tensor, Tensor, Tensor]:
        rating = self.item_mean[ep.query_items.to(self.item_mean.device)]
        like = rating - self.like_threshold
        return self.loss(rating, like, ep.query_y), rating, like
