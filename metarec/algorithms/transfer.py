"""Baseline and Baseline++ (Chen et al., ICLR 2019, "A Closer Look at Few-shot Classification",
arXiv:1904.04232): plain supervised pre-training on all meta-training classes, then a new
classifier per test episode.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.algorithms.fitting import fit_head
from metarec.algorithms.multitask import MultiTaskStage
from metarec.episode import Episode
from metarec.models.heads import LinearHead, class_means
from metarec.registry import ALGORITHMS

HEADS = ("linear", "cosine")


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
class Baseline(MultiTaskStage):
    """Pre-training on the meta-training classes (:class:`MultiTaskStage`), a new head per episode.

    Validation and test: the pre-trained encoder embeds the episode, a new head is fitted on
    the support set inside :meth:`episode_forward` (timed in ``test/adapt_s``) by full-batch
    L-BFGS — a logistic regression for ``head="linear"`` (Baseline), a cosine classifier
    initialized at the normalized support prototypes for ``head="cosine"`` (Baseline++). The
    pre-training head is discarded.

    Args:
        head: ``"linear"`` or ``"cosine"`` (both stages).
        scale: logit scale of cosine heads.
        l2: L2 penalty of the per-episode linear head (``mean CE + l2/2 ||W||^2``).
        max_iter: L-BFGS iterations of the per-episode head.
        normalize: L2-normalize embeddings before the per-episode linear fit.
        **kwargs: see :class:`MultiTaskStage` (``train_softmax``) and :class:`MetaLearner`.
    """

    head_default: ClassVar[str] = "linear"

    def __init__(self, head: Optional[str] = None, scale: float = 10.0, l2: float = 1e-3, max_iter: int = 100,
                 normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head_kind = head or self.head_default
        if self.head_kind not in HEADS:
            raise ValueError(f"{type(self).__name__} head must be one of {HEADS}, got {self.head_kind!r}")
        if l2 < 0:
            raise ValueError(f"{type(self).__name__} l2 must be >= 0, got {l2}")
        self.scale = float(scale)
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        self.normalize = bool(normalize)

    def make_train_head(self, n_rows: int) -> nn.Module:
        if self.head_kind == "cosine":
            return CosineHead(self.encoder.dim, n_rows, self.scale)
        return super().make_train_head(n_rows)

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            support, query = self.embed_episode(episode)
        support, query = support.float(), query.float()
        n_way = episode.n_way
        head: nn.Module
        if self.head_kind == "cosine":
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
            logits = head(query)
        return F.cross_entropy(logits, episode.query_y), logits


@ALGORITHMS.register("baseline_pp")
class BaselinePP(Baseline):
    """Baseline++: :class:`Baseline` with cosine classifiers in both stages."""

    head_default = "cosine"
