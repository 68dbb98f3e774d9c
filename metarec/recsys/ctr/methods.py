"""The cold-start CTR methods: how a new item's ID embedding starts and warms up.

All share the pre-trained DeepFM base of :class:`CTRLearner` and see the same test items and
warm-up batches; each overrides only what differs:

* ``ctr_random`` — a random ID embedding (the base table's own initialization), then warm-up
  SGD steps on it (Meta-Embedding's baseline).
* ``ctr_regressor`` — the embedding predicted from the item's feature fields by a plain regressor
  (the same generator network as Meta-Embedding) fitted by MSE to the pre-trained old-item ID
  embeddings; then the same warm-up.
* ``ctr_meta_embedding`` — Meta-Embedding (Pan et al., SIGIR 2019, arXiv:1904.11547): the generator
  is meta-trained on old items so that its embedding is good on a batch ``a`` *and*, after one
  gradient step on ``a``, on batch ``b``: loss ``alpha * l_a + (1 - alpha) * l_b``. Second order by
  default (the meta-gradient flows through the step), ``first_order=true`` drops that.
* ``ctr_maml`` — MAML (Finn et al. 2017, arXiv:1703.03400, learn2learn ``MAML.clone()/adapt()``)
  over one shared initial item embedding **and the top layer**: meta-trained on old items (adapt
  on ``a``, loss on ``b``); at test each warm-up batch is ``warm_steps`` adaptation steps of both.
* ``ctr_popularity`` — no network: the training click rate (cold), then the item's smoothed click
  rate over the warm-up impressions seen so far, ``(clicks + m * ctr) / (n + m)``.
"""

from __future__ import annotations

import copy
from typing import Any

import learn2learn as l2l
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.recsys.ctr.learner import CTRLearner
from metarec.recsys.ctr.split import PHASES
from metarec.registry import CTR_METHODS

#: What a method without a meta-training stage refuses (instead of ignoring it).
NO_META_TRAINING = {"meta_steps": "this method has no meta-training stage (its meta_steps is 0)",
                    "meta_lr": "this method has no meta-training stage"}


def _generator(n_fields: int, emb_dim: int, hidden: int) -> nn.Module:
    """Feature fields ``(n, f, d)`` → ID embedding ``(n, d)``; the regressor's and Meta-Embedding's network."""
    return nn.Sequential(nn.Flatten(1), nn.Linear(n_fields * emb_dim, hidden), nn.ReLU(), nn.Linear(hidden, emb_dim))


@CTR_METHODS.register("ctr_random")
class RandomInit(CTRLearner):
    """Random ID embedding ``N(0, id_init_std)`` per new item (seeded), then warm-up steps."""

    meta_trains = False
    fixed_options = NO_META_TRAINING

    def init_embedding(self, items: Tensor, fields: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        emb = torch.randn(self.base.id_table.num_embeddings, self.emb_dim, generator=g) * self.id_init_std
        return emb[items.cpu()].to(fields.device)


@CTR_METHODS.register("ctr_regressor")
class FeatureRegressor(CTRLearner):
    """A regressor from feature fields to the pre-trained ID embeddings of old items (MSE).

    Args:
        gen_hidden: hidden width of the regressor.
    """

    def __init__(self, gen_hidden: int = 64, **kw: Any) -> None:
        super().__init__(**kw)
        self.generator = _generator(self.base.n_item_fields, self.emb_dim, gen_hidden)

    def method_parameters(self) -> list[nn.Parameter]:
        return list(self.generator.parameters())

    def init_embedding(self, items: Tensor, fields: Tensor) -> Tensor:
        return self.generator(fields.detach())

    def meta_loss(self, batch: dict[str, Tensor]) -> Tensor:
        items = batch["item"]
        return F.mse_loss(self.generator(self.fields(items).detach()), self.base.id_table(items).detach())


@CTR_METHODS.register("ctr_meta_embedding")
class MetaEmbedding(FeatureRegressor):
    """Meta-Embedding (Pan et al., SIGIR 2019, arXiv:1904.11547).

    The inner step is on the generator's *output* (the embedding), not on module parameters, so it
    is one ``torch.autograd.grad`` with ``create_graph`` (second order) rather than learn2learn's
    module cloning.

    Args:
        cold_lr: step size of the inner gradient step on the generated embedding.
        alpha: weight of the cold-start loss ``l_a`` (paper: 0.1).
        first_order: do not differentiate through the inner step.
        **kw: see :class:`FeatureRegressor`.
    """

    def __init__(self, cold_lr: float = 0.1, alpha: float = 0.1, first_order: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.cold_lr, self.alpha, self.first_order = float(cold_lr), float(alpha), bool(first_order)

    def meta_loss(self, batch: dict[str, Tensor]) -> Tensor:
        items = batch["item"]
        fields = self.fields(items).detach()
        emb = self.generator(fields)
        m = len(items)
        loss_a = self.item_loss(self.task_logits(batch["user_a"], fields, emb), batch["click_a"])
        (g,) = torch.autograd.grad(loss_a, emb, create_graph=not self.first_order)
        emb_b = emb - self.cold_lr * g
        loss_b = self.item_loss(self.task_logits(batch["user_b"], fields, emb_b), batch["click_b"])
        return (self.alpha * loss_a + (1 - self.alpha) * loss_b) / m


class _ItemHead(nn.Module):
    """What MAML adapts per item: the item's ID embedding ``(d,)`` and the base's top layer."""

    def __init__(self, emb_dim: int, top: nn.Linear) -> None:
        super().__init__()
        self.emb = nn.Parameter(torch.zeros(emb_dim))
        self.top = copy.deepcopy(top)


@CTR_METHODS.register("ctr_maml")
class MAMLItem(CTRLearner):
    """MAML over a shared initial item embedding and the top layer (learn2learn).

    Args:
        inner_lr: adaptation step size (meta-training and test).
        inner_steps: adaptation steps on batch ``a`` in meta-training.
        first_order: FOMAML.
        **kw: see :class:`CTRLearner` (``warm_steps``: adaptation steps per warm-up batch at test).
    """

    def __init__(self, inner_lr: float = 0.1, inner_steps: int = 1, first_order: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.inner_steps = int(inner_steps)
        self.head = _ItemHead(self.emb_dim, self.base.top)
        self.maml = l2l.algorithms.MAML(self.head, lr=float(inner_lr), first_order=bool(first_order))

    def method_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def on_meta_start(self) -> None:
        # Start from the pre-trained network: its top layer and the mean old-item embedding.
        with torch.no_grad():
            self.head.top.load_state_dict(self.base.top.state_dict())
            self.head.emb.copy_(self.base.id_table.weight.mean(0))
        self.head.requires_grad_(True)

    def _loss(self, learner: nn.Module, user: Tensor, fields: Tensor, click: Tensor) -> Tensor:
        k = user.shape[0]
        logits = self.base(user, fields.expand(k, -1, -1), learner.emb.expand(k, -1), top=learner.top)
        return F.binary_cross_entropy_with_logits(logits, click)

    def meta_loss(self, batch: dict[str, Tensor]) -> Tensor:
        all_fields = self.fields(batch["item"]).detach()
        losses = []
        for j in range(len(batch["item"])):
            learner = self.maml.clone()
            f = all_fields[j : j + 1]
            for _ in range(self.inner_steps):
                learner.adapt(self._loss(learner, batch["user_a"][j], f, batch["click_a"][j]))
            losses.append(self._loss(learner, batch["user_b"][j], f, batch["click_b"][j]))
        return torch.stack(losses).mean()

    def phase_probs(self, items: Tensor, warm: list[dict[str, Tensor]], query: dict[str, Tensor]) -> list[Tensor]:
        fields = self.fields(items).detach()
        out = [torch.empty(len(query["task"]), device=fields.device) for _ in PHASES]
        # Query rows are grouped by task: one slice per item.
        bounds = torch.searchsorted(query["task"], torch.arange(len(items) + 1, device=query["task"].device)).tolist()
        with torch.enable_grad():
            for j in range(len(items)):
                sel = slice(bounds[j], bounds[j + 1])
                learner = self.maml.clone()
                f = fields[j : j + 1]
                for p in range(len(PHASES)):
                    if p:
                        for _ in range(self.warm_steps):
                            learner.adapt(self._loss(learner, warm[p - 1]["user"][j], f, warm[p - 1]["click"][j]),
                                          first_order=True)
                    u = query["user"][sel]
                    n = u.shape[0]
                    logits = self.base(u, f.expand(n, -1, -1), learner.emb.expand(n, -1), top=learner.top)
                    out[p][sel] = torch.sigmoid(logits).detach()
        return out


@CTR_METHODS.register("ctr_popularity")
class Popularity(CTRLearner):
    """Global training click rate, then the item's smoothed click rate over the warm-up impressions.

    Args:
        prior_strength: ``m``, pseudo-impressions of the global rate in the smoothed item rate.
    """

    meta_trains = False
    trains = False
    fixed_options = NO_META_TRAINING

    def __init__(self, prior_strength: float = 10.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.prior_strength = float(prior_strength)

    def phase_probs(self, items: Tensor, warm: list[dict[str, Tensor]], query: dict[str, Tensor]) -> list[Tensor]:
        clicks = torch.zeros(len(items), device=self.item_cat.device)
        seen = torch.zeros(len(items), device=self.item_cat.device)
        out = []
        for p in range(len(PHASES)):
            if p:
                clicks = clicks + warm[p - 1]["click"].sum(1)
                seen = seen + warm[p - 1]["click"].shape[1]
            rate = (clicks + self.prior_strength * self.train_ctr) / (seen + self.prior_strength)
            out.append(rate[query["task"]])
        return out
