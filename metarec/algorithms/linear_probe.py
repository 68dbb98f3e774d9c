"""Linear probe: a logistic-regression head fitted on frozen support embeddings per episode.

The standard "frozen features + linear classifier" reference (e.g. Tian et al., ECCV 2020,
"Rethinking Few-Shot Image Classification: a Good Embedding Is All You Need?",
arXiv:2003.11539). The fit is :func:`~metarec.algorithms.fitting.fit_head`, shared with the
other methods that fit a fresh head on a support set.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.algorithms.base import MetaLearner
from metarec.algorithms.fitting import fit_head
from metarec.episode import Episode
from metarec.models.heads import LinearHead
from metarec.registry import ALGORITHMS


@ALGORITHMS.register("linear_probe")
class LinearProbe(MetaLearner):
    """Frozen encoder; per episode an L2-regularized logistic regression on support embeddings.

    Nothing is meta-trained (``trains = False``): the pretrained encoder embeds support and
    query once, and a fresh multinomial logistic regression is fitted on the support set by
    L-BFGS inside :meth:`episode_forward`, so the fit counts in ``test/adapt_s``. The fit is
    deterministic (zero init, full batch): results depend only on the episode.

    Under ``freeze=frozen`` the inputs are cached pooled embeddings and an episode costs only
    the fit; under ``top_k`` / ``full`` the pretrained top layers run once per episode (the
    weights are the same, nothing is updated).

    Args:
        l2: L2 penalty on the head weights (per example: ``mean CE + l2/2 ||W||^2``).
        max_iter: L-BFGS iterations.
        normalize: L2-normalize embeddings before the fit (recommended by Tian et al.).
        **kwargs: see :class:`MetaLearner`.
    """

    trains = False

    def __init__(self, l2: float = 1e-3, max_iter: int = 100, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if l2 < 0:
            raise ValueError(f"linear_probe l2 must be >= 0, got {l2}")
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        self.normalize = bool(normalize)

    def embed(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Support and query embeddings of the pretrained encoder, fp32, no gradient."""
        with torch.no_grad():
            support, query = self.embed_episode(episode)
        support, query = support.float(), query.float()
        if self.normalize:
            support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
        return support, query

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        support, query = self.embed(episode)
        head = LinearHead(support.shape[1], episode.n_way).to(support.device)
        fit_head(head, support, episode.support_y, l2=self.l2, max_iter=self.max_iter)
        with torch.no_grad():
            logits = head(query)
        return F.cross_entropy(logits, episode.query_y), logits
