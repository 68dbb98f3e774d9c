"""Prototypical Networks (Snell et al., NeurIPS 2017, arXiv:1703.05175)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from metarec.algorithms.base import MetaLearner
from metarec.episode import Episode
from metarec.models.heads import PrototypeHead
from metarec.registry import ALGORITHMS


@ALGORITHMS.register("protonet")
class ProtoNet(MetaLearner):
    """Classifies queries by distance to the class means of the embedded support set.

    Args:
        metric: ``"euclidean"`` (squared distance, as in the paper) or ``"cosine"``.
        **kwargs: see :class:`MetaLearner`.
    """

    def __init__(self, metric: str = "euclidean", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head = PrototypeHead(metric)

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        support, query = self.embed_episode(episode)
        logits = self.head(query, support, episode.support_y, episode.n_way)
        return F.cross_entropy(logits, episode.query_y), logits


@ALGORITHMS.register("nearest_prototype")
class NearestPrototype(ProtoNet):
    """No meta-training: the pretrained encoder as it is, nearest class mean.

    The reference every meta-learner must beat; it runs on the same test episodes.
    """

    trains = False
