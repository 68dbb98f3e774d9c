"""The MeLU network (Lee et al. KDD 2019, arXiv:1908.00413): user and item embeddings →
decision layers → a rating head and a like (click) head.

Split in two so that MAML can adapt only the decision part (MeLU's *local update*):

* :class:`MeLUEmbedding` (global): one embedding per categorical user field (age bucket,
  gender, occupation — no user-id embedding, which could not generalise to new users), one per
  categorical item field (year bucket), a bag embedding of the item's multi-hot tokens (genres,
  mean of their embeddings) and a linear projection of the item's frozen text embedding.
* :class:`DecisionLayers` (adapted per user): an MLP over ``[user ; item]`` and two linear heads.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class MeLUEmbedding(nn.Module):
    """``[user ; item]`` input of the decision layers, ``(n, in_dim)``.

    Args:
        user_vocab: vocabulary size of every categorical user field.
        item_vocab: vocabulary size of every categorical item field.
        n_multi: width of the item multi-hot bag (e.g. number of genres).
        text_dim: width of the item text embedding.
        emb_dim: width of every field embedding.
    """

    def __init__(self, user_vocab: Sequence[int], item_vocab: Sequence[int], n_multi: int, text_dim: int,
                 emb_dim: int = 32) -> None:
        super().__init__()
        self.user = nn.ModuleList(nn.Embedding(v, emb_dim) for v in user_vocab)
        self.item = nn.ModuleList(nn.Embedding(v, emb_dim) for v in item_vocab)
        self.multi = nn.Linear(n_multi, emb_dim, bias=False)
        self.text = nn.Linear(text_dim, emb_dim)
        self.out_dim = emb_dim * (len(self.user) + len(self.item) + 2)

    def forward(self, user_x: Tensor, items: dict[str, Tensor]) -> Tensor:
        """
        Args:
            user_x: ``(n_user_fields,)`` categorical ids of the user.
            items: ``cat (n, n_item_fields)``, ``multi (n, n_multi)``, ``text (n, text_dim)``.
        """
        n = items["text"].shape[0]
        u = [e(user_x[j]).expand(n, -1) for j, e in enumerate(self.user)]
        i = [e(items["cat"][:, j]) for j, e in enumerate(self.item)]
        return torch.cat([*u, *i, self.multi(items["multi"]), self.text(items["text"])], dim=-1)


class DecisionLayers(nn.Module):
    """MLP decision layers and the two heads: predicted rating ``(n,)`` and like logit ``(n,)``.

    Args:
        in_dim: input width.
        hidden: widths of the hidden layers (MeLU: 64, 64).
        rating_bias: initial bias of the rating head (the training mean rating): the layers
            then learn deviations from it.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (64, 64), rating_bias: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.mlp = nn.Sequential(*layers)
        self.rating = nn.Linear(d, 1)
        self.like = nn.Linear(d, 1)
        nn.init.constant_(self.rating.bias, rating_bias)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = self.mlp(z)
        return self.rating(h).squeeze(-1), self.like(h).squeeze(-1)
