"""RatingEpisode: one user task with model inputs (what a recommender sees)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RatingEpisode:
    """A user task with model inputs: what a recommender sees.

    Attributes:
        user_x: categorical feature ids of the user, ``(n_user_fields,)``.
        support_x: item inputs of the support set: ``{"cat": (n_s, n_item_fields) long,
            "multi": (n_s, n_multi) float, "text": (n_s, text_dim) float}``.
        support_y: support ratings ``(n_s,)`` float.
        query_x: item inputs of the query set (as ``support_x``, ``n_q`` rows).
        query_y: query ratings ``(n_q,)`` float.
        state: the task's state (``"train"`` or one of :data:`STATES`).
        user: raw user id.
        support_items, query_items: item indices ``(n_s,)``, ``(n_q,)``.
        index: position in its stream or fixed set.
        family: the family name.
    """

    user_x: Tensor
    support_x: dict[str, Tensor]
    support_y: Tensor
    query_x: dict[str, Tensor]
    query_y: Tensor
    state: str
    user: str
    support_items: Tensor
    query_items: Tensor
    index: int = -1
    family: str = ""

    def to(self, device: torch.device | str) -> "RatingEpisode":
        mv = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return RatingEpisode(self.user_x.to(device), mv(self.support_x), self.support_y.to(device), mv(self.query_x),
                             self.query_y.to(device), self.state, self.user, self.support_items, self.query_items,
                             self.index, self.family)

    def fingerprint(self) -> str:
        """Hash of family, state, user, support/query items and ratings (pairing key)."""
        h = hashlib.sha256()
        for s in (self.family, self.state, self.user):
            h.update(s.encode() + b"\0")
        for t in (self.support_items, self.query_items):
            h.update(t.to(torch.int64).numpy().tobytes())
        for t in (self.support_y, self.query_y):
            h.update(t.detach().cpu().to(torch.float32).numpy().tobytes())
        return h.hexdigest()[:16]
