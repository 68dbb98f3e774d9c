"""The one object every algorithm sees: an N-way K-shot episode."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Union

import torch
from torch import Tensor

#: Model inputs for a set of examples. Which form depends on the encoder's freeze policy
#: (see :mod:`metarec.models.features`): token ids, cached hidden states below the first
#: trainable layer, or cached pooled embeddings ``(n, dim)``.
Inputs = Union[Tensor, dict[str, Tensor]]


def _inputs_to(x: Inputs, device: torch.device | str) -> Inputs:
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    return {k: v.to(device, non_blocking=True) for k, v in x.items()}


@dataclass
class Episode:
    """An N-way K-shot task: a support set to adapt on, a query set to predict.

    Attributes:
        support_x: model inputs of the support set, ``n_way * n_shot`` examples.
        support_y: episode labels in ``[0, n_way)``, shape ``(n_way * n_shot,)``.
        query_x: model inputs of the query set, ``n_way * n_query`` examples.
        query_y: episode labels, shape ``(n_way * n_query,)``.
        classes: the family's class name for each episode label (``classes[y]``).
        family: name of the task family the episode was drawn from.
        task: name of the task (e.g. ``"apparel.t2"``) inside the family.
        support_idx: corpus row of every support example, shape like ``support_y``.
        query_idx: corpus row of every query example, shape like ``query_y``.
        index: position of the episode in its (seeded) stream.
        corpus: hash of the corpus texts the rows index into (see ``fingerprint``).
    """

    support_x: Inputs
    support_y: Tensor
    query_x: Inputs
    query_y: Tensor
    classes: list[str]
    family: str
    task: str = ""
    support_idx: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    query_idx: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    index: int = -1
    corpus: str = ""

    @property
    def n_way(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> "Episode":
        """Returns a copy with inputs and labels on ``device`` (indices stay on CPU)."""
        return Episode(
            support_x=_inputs_to(self.support_x, device),
            support_y=self.support_y.to(device),
            query_x=_inputs_to(self.query_x, device),
            query_y=self.query_y.to(device),
            classes=self.classes,
            family=self.family,
            task=self.task,
            support_idx=self.support_idx,
            query_idx=self.query_idx,
            index=self.index,
            corpus=self.corpus,
        )

    def fingerprint(self) -> str:
        """A short hash of the corpus, which rows are support and query, their labels and classes.

        Two runs that saw episodes with equal fingerprints were evaluated on identical data,
        whatever model inputs (tokens, cached states) they used.
        """
        h = hashlib.sha256()
        for s in (self.family, self.task, self.corpus, "\0".join(self.classes)):
            h.update(s.encode())
            h.update(b"\0")
        for t in (self.support_idx, self.support_y, self.query_idx, self.query_y):
            h.update(t.detach().cpu().to(torch.int64).numpy().tobytes())
        return h.hexdigest()[:16]


def episode_set_fingerprint(fingerprints: list[str]) -> str:
    """Order-sensitive hash of a list of episode fingerprints (an evaluation set)."""
    return hashlib.sha256("\n".join(fingerprints).encode()).hexdigest()[:16]
