"""A labeled text corpus: the raw material every task family is cut from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the file, line (or row) and offending value."""


@dataclass
class LabeledCorpus:
    """Texts with integer labels and an optional group (e.g. product domain) per text.

    Attributes:
        texts: one string per example.
        labels: class id per example, shape ``(n,)``, indexes ``label_names``.
        label_names: human-readable name of every class id.
        groups: optional group id per example, shape ``(n,)``, indexes ``group_names``.
        group_names: names of the groups.
        name: short name used in messages and cache keys.
        source: where the corpus came from (a path, a generator and its seed).
        origins: optional ``"file:line"`` per example, for error messages.
        label_map: how raw labels in the source map to ``label_names`` (recorded with results).
    """

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    groups: Optional[np.ndarray] = None
    group_names: Optional[list[str]] = None
    name: str = "corpus"
    source: str = ""
    origins: Optional[list[str]] = None
    label_map: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.texts)
        if self.labels.shape != (n,):
            raise DataError(f"{self.name}: {n} texts but labels of shape {self.labels.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
            raise DataError(f"{self.name}: label ids must lie in [0, {len(self.label_names)})")
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=np.int64)
            if self.groups.shape != (n,):
                raise DataError(f"{self.name}: {n} texts but groups of shape {self.groups.shape}")
            if self.group_names is None:
                raise DataError(f"{self.name}: groups given without group_names")
        for i, t in enumerate(self.texts):
            if not isinstance(t, str) or not t.strip():
                where = self.origins[i] if self.origins else f"row {i}"
                raise DataError(f"{self.name}: empty text at {where}")

    def __len__(self) -> int:
        return len(self.texts)

    def where(self, i: int) -> str:
        """Where example ``i`` came from, for messages."""
        return self.origins[i] if self.origins else f"{self.source or self.name} row {i}"

    @staticmethod
    def concat(parts: Sequence["LabeledCorpus"], name: str) -> "LabeledCorpus":
        """Concatenates corpora with identical label names; groups are unified by name."""
        if not parts:
            raise DataError(f"{name}: nothing to concatenate")
        label_names = parts[0].label_names
        for p in parts:
            if p.label_names != label_names:
                raise DataError(f"{name}: label names differ: {p.label_names} vs {label_names}")
        group_names: list[str] = []
        gid: dict[str, int] = {}
        groups = []
        for p in parts:
            if p.groups is None or p.group_names is None:
                names = [p.name] * len(p)
            else:
                names = [p.group_names[g] for g in p.groups]
            for g in names:
                if g not in gid:
                    gid[g] = len(group_names)
                    group_names.append(g)
            groups.append(np.array([gid[g] for g in names], dtype=np.int64))
        origins = None
        if all(p.origins is not None for p in parts):
            origins = [o for p in parts for o in p.origins]  # type: ignore[union-attr]
        return LabeledCorpus(
            texts=[t for p in parts for t in p.texts],
            labels=np.concatenate([p.labels for p in parts]),
            label_names=list(label_names),
            groups=np.concatenate(groups),
            group_names=group_names,
            name=name,
            source=", ".join(p.source for p in parts if p.source),
            origins=origins,
            label_map=dict(parts[0].label_map),
        )
