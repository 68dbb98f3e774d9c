"""DeepFM (Guo et al., IJCAI 2017, arXiv:1703.04247) with the item ID embedding as one field.

Every field is a ``d``-wide embedding: the user's categorical fields, the item's categorical fields,
the mean embedding of its multi-hot tokens (genres), a linear projection of its frozen text
embedding, and the **item ID embedding**, passed in from outside so that a method can initialize
it (random, regressor, Meta-Embedding generator) and warm it up without touching the rest:

    logit = bias + FM(fields) + top(MLP(concat(fields)))

FM is the second-order factorization-machine term ``0.5 * sum((sum_f e_f)^2 - sum_f e_f^2)``.
DeepFM's first-order term is left out: its per-item weight would be a second cold parameter, and
Meta-Embedding generates the embedding only. ``top`` (the last linear layer) is a separate module
so MAML can adapt it per item.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn


class DeepFM(nn.Module):
    """The base CTR network (see module docstring).

    Args:
        user_vocab: vocabulary size of every categorical user field.
        item_vocab: vocabulary size of every categorical item field.
        n_multi: width of the item multi-hot bag.
        text_dim: width of the item text embedding.
        n_items: rows of the (pre-trained) item ID embedding table.
        emb_dim: ``d``, the width of every field embedding.
        hidden: widths of the MLP's hidden layers.
        id_init_std: standard deviation of the ID table's (and random init's) normal initialization.
    """

    def __init__(self, user_vocab: Sequence[int], item_vocab: Sequence[int], n_multi: int, text_dim: int,
                 n_items: int, emb_dim: int = 16, hidden: Sequence[int] = (64, 32), id_init_std: float = 0.01) -> None:
        super().__init__()
        self.emb_dim = emb_dim
        self.user = nn.ModuleList(nn.Embedding(v, emb_dim) for v in user_vocab)
        self.item = nn.ModuleList(nn.Embedding(v, emb_dim) for v in item_vocab)
        self.multi = nn.Linear(n_multi, emb_dim, bias=False)
        self.text = nn.Linear(text_dim, emb_dim)
        for e in [*self.user, *self.item]:
            nn.init.normal_(e.weight, std=id_init_std)
        self.id_table = nn.Embedding(n_items, emb_dim)
        nn.init.normal_(self.id_table.weight, std=id_init_std)
        self.n_item_fields = len(self.item) + 2
        n_fields = len(self.user) + self.n_item_fields + 1
        layers: list[nn.Module] = []
        d = n_fields * emb_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.mlp = nn.Sequential(*layers)
        self.top = nn.Linear(d, 1)
        self.bias = nn.Parameter(torch.zeros(()))

    def item_fields(self, cat: Tensor, multi: Tensor, text: Tensor) -> Tensor:
        """Embeddings of the item's feature fields, ``(n, n_item_fields, d)`` (the generators' input).

        Args:
            cat: ``(n, n_item_fields_cat)`` ids; multi: ``(n, n_multi)``; text: ``(n, text_dim)``.
        """
        fields = [e(cat[:, j]) for j, e in enumerate(self.item)] + [self.multi(multi), self.text(text)]
        return torch.stack(fields, 1)

    def forward(self, user_cat: Tensor, item_fields: Tensor, id_emb: Tensor, top: Optional[nn.Module] = None) -> Tensor:
        """Click logits ``(n,)``.

        Args:
            user_cat: ``(n, n_user_fields)`` categorical ids.
            item_fields: ``(n, n_item_fields, d)`` from :meth:`item_fields`.
            id_emb: ``(n, d)`` the item ID embedding of every row.
            top: replaces :attr:`top` (a MAML clone adapted to one item).
        """
        u = torch.stack([e(user_cat[:, j]) for j, e in enumerate(self.user)], 1)
        fields = torch.cat([u, item_fields, id_emb[:, None, :]], 1)
        s = fields.sum(1)
        fm = 0.5 * (s.pow(2) - fields.pow(2).sum(1)).sum(-1)
        deep = (top or self.top)(self.mlp(fields.flatten(1))).squeeze(-1)
        return self.bias + fm + deep
