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

    def rows(self) -> tuple[Tensor, Tensor]:
        """Weights ``(n_way, dim)`` and biases ``(n_way,)`` of the head's rows (one per class)."""
        return self.linear.weight, self.linear.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class OrdinalHead(nn.Module):
    """Binary tasks that cut one latent score per group: a cumulative-link (ordinal) head.

    Every row of the head is one class of a binary task. Task ``k`` belongs to group ``g(k)``
    and has a cut ``c_k``; its two rows share the group's score ``w_g · x``:
    ``logit = s · (w_g · x - c_k) / 2`` with ``s = -1`` for the lower label and ``+1`` for the
    upper one, so the task's log-odds are ``w_g · x - c_k`` (McCullagh, JRSS-B 1980). In ARSC a
    group is a product domain and its tasks are the rating thresholds t2/t4/t5: one star score
    per domain, three cuts, instead of three unrelated binary classifiers.

    :meth:`rows` gives the equivalent per-row linear weights, so code that reads a linear head's
    rows (a test task's prior head) reads this one the same way.

    Args:
        dim: embedding size.
        row_group: group index of each row's task ``(n_rows,)``.
        row_task: task index of each row ``(n_rows,)`` (the cut it uses).
        row_sign: ``-1`` (lower label) or ``+1`` (upper label) per row ``(n_rows,)``.
    """

    def __init__(self, dim: int, row_group: list[int], row_task: list[int], row_sign: list[int]) -> None:
        super().__init__()
        if not len(row_group) == len(row_task) == len(row_sign):
            raise ValueError("OrdinalHead: row_group, row_task and row_sign must have one entry per row")
        if any(s not in (-1, 1) for s in row_sign):
            raise ValueError(f"OrdinalHead: row_sign entries must be -1 or +1, got {sorted(set(row_sign))}")
        # Not zero-initialized, like the multi-task stage's linear head: a zero score sends no
        # gradient to the encoder at first.
        self.score = nn.Linear(dim, max(row_group) + 1, bias=False)
        self.cut = nn.Parameter(torch.zeros(max(row_task) + 1))
        self.register_buffer("row_group", torch.tensor(row_group, dtype=torch.long), persistent=False)
        self.register_buffer("row_task", torch.tensor(row_task, dtype=torch.long), persistent=False)
        self.register_buffer("row_sign", torch.tensor(row_sign, dtype=torch.float32), persistent=False)

    def rows(self) -> tuple[Tensor, Tensor]:
        """Per-row linear weights ``(n_rows, dim)`` and biases ``(n_rows,)`` of the head."""
        half = 0.5 * self.row_sign
        return half[:, None] * self.score.weight[self.row_group], -half * self.cut[self.row_task]

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.rows()
        return F.linear(x, weight.to(x.dtype), bias.to(x.dtype))
