"""Task families: a corpus plus the rule that cuts it into meta-train / val / test tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from metarec.data.corpus import DataError, LabeledCorpus

SPLITS = ("train", "val", "test")


@dataclass
class Task:
    """One pool of labeled examples that episodes are drawn from.

    Attributes:
        name: e.g. ``"apparel.t2"`` or ``"train-classes"``.
        indices: corpus rows in the pool, shape ``(m,)``.
        labels: family class id of every row, shape ``(m,)``.
        support: fixed support rows (official protocols such as ARSC meta-test); when set,
            every episode of this task uses exactly these support rows, never resampled.
        query: fixed query rows, used with ``support``.
    """

    name: str
    indices: np.ndarray
    labels: np.ndarray
    support: Optional[np.ndarray] = None
    query: Optional[np.ndarray] = None

    @property
    def classes(self) -> list[int]:
        return sorted(int(c) for c in np.unique(self.labels))

    @property
    def fixed(self) -> bool:
        return self.support is not None


@dataclass
class TaskFamily:
    """A labeled corpus and its meta-train / meta-val / meta-test tasks.

    Two common shapes, both built by the class methods below:
      * class split (e.g. product categories): the classes are divided between splits and
        each split is one task; an episode samples ``n_way`` of that split's classes.
      * group split (e.g. sentiment per product domain): every group is a task with the
        corpus labels as classes; the groups are divided between splits.
    """

    name: str
    corpus: LabeledCorpus
    class_names: list[str]
    splits: dict[str, list[Task]]
    synthetic: bool = False
    metadata: dict = field(default_factory=dict)

    def tasks(self, split: str) -> list[Task]:
        if split not in self.splits:
            raise DataError(f"family {self.name!r} has no split {split!r}; it has {sorted(self.splits)}")
        tasks = self.splits[split]
        if not tasks:
            raise DataError(f"family {self.name!r}: split {split!r} has no tasks")
        return tasks

    def split_classes(self, split: str) -> list[int]:
        return sorted({c for t in self.tasks(split) for c in t.classes})

    @classmethod
    def from_class_split(
        cls,
        name: str,
        corpus: LabeledCorpus,
        class_splits: dict[str, Sequence[int]],
        **kw,
    ) -> "TaskFamily":
        """One task per split; its classes are the corpus labels listed for the split."""
        seen: dict[int, str] = {}
        splits: dict[str, list[Task]] = {}
        for split, classes in class_splits.items():
            for c in classes:
                if c in seen:
                    raise DataError(f"family {name!r}: class {corpus.label_names[c]!r} is in both {seen[c]!r} and {split!r}")
                seen[c] = split
            rows = np.flatnonzero(np.isin(corpus.labels, np.asarray(list(classes), dtype=np.int64)))
            splits[split] = [Task(name=f"{split}-classes", indices=rows, labels=corpus.labels[rows])]
        return cls(name=name, corpus=corpus, class_names=list(corpus.label_names), splits=splits, **kw)

    @classmethod
    def from_group_split(
        cls,
        name: str,
        corpus: LabeledCorpus,
        group_splits: dict[str, Sequence[int]],
        **kw,
    ) -> "TaskFamily":
        """One task per group (e.g. product domain); the corpus labels are the classes.

        Class ids are made unique per task (``"<group>:<label>"``) so that an episode's
        ``classes`` say which domain's positives and negatives it holds.
        """
        if corpus.groups is None or corpus.group_names is None:
            raise DataError(f"family {name!r}: corpus {corpus.name!r} has no group column")
        n_labels = len(corpus.label_names)
        class_names = [f"{g}:{l}" for g in corpus.group_names for l in corpus.label_names]
        splits: dict[str, list[Task]] = {}
        for split, groups in group_splits.items():
            tasks = []
            for g in groups:
                rows = np.flatnonzero(corpus.groups == g)
                tasks.append(Task(name=corpus.group_names[g], indices=rows, labels=g * n_labels + corpus.labels[rows]))
            splits[split] = tasks
        return cls(name=name, corpus=corpus, class_names=class_names, splits=splits, **kw)


def split_ids(ids: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Deterministically shuffles ``ids`` with ``seed`` and cuts them by ``fractions``."""
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    cuts = np.cumsum([round(f * len(ids)) for f in fractions[:-1]])
    out, start = [], 0
    for c in list(cuts) + [len(ids)]:
        out.append(sorted(order[start:c]))
        start = c
    return out
