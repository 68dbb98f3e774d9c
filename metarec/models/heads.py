"""Classification heads: a linear classifier and a prototype (nearest class mean) head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def class_means(x: Tensor, y: Tensor, n_way: int) -> Tensor:
    """Mean embedding of every class.

    Args:
        x: embeddings ``(n_way * n_shot, dim)``.
        y: episode labels in ``[0, n_way)``, shape ``(n_way * n_shot,)``.
        n_way: number of classes.

    Returns:
        ``(n_way, dim)`` class means (prototypes).
    """
    one_hot = F.one_hot(y, n_way).to(x.dtype)  # (n, n_way)
    return (one_hot.T @ x) / one_hot.sum(0).clamp_min(1).unsqueeze(1)


class PrototypeHead(nn.Module):
    """Nearest-prototype classifier (Snell et al. 2017, arXiv:1703.05175).

    Logits are minus squared Euclidean distances to the class means of the support set,
    or scaled cosine similarities when ``metric="cosine"``.
    """

    def __init__(self, metric: str = "euclidean", scale: float = 10.0) -> None:
        super().__init__()
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"PrototypeHead metric must be 'euclidean' or 'cosine', got {metric!r}")
        self.metric = metric
        self.scale = scale

    def forward(self, query: Tensor, support: Tensor, support_y: Tensor, n_way: int) -> Tensor:
        """Returns logits ``(n_query_total, n_way)``."""
        protos = class_means(support, support_y, n_way)
        if self.metric == "cosine":
            return self.scale * F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).T
        # Computed in fp32: squared distances of bf16 embeddings lose most of their digits.
        q, p = query.float(), protos.float()
        return -torch.cdist(q, p).pow(2)


class LinearHead(nn.Module):
    """A linear classifier ``(batch, dim) -> (batch, n_way)``.

    ``zero_init`` starts from all-zero weights: for MAML this makes the initial head
    invariant to the arbitrary order of the episode's classes (Triantafillou et al. 2020).
    """

    def __init__(self, dim: int, n_way: int, zero_init: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, n_way)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)
