"""Seeded N-way K-shot episode sampling with learn2learn task transforms.

Episodes are *indices* into the family's corpus; turning rows into model inputs (tokens or
cached encoder states) is the job of :class:`metarec.models.features.FeatureStore`.

Determinism: episode ``i`` of a stream depends only on ``(seed, split, i)``. learn2learn's
transforms draw from Python's global :mod:`random`, so each draw runs inside
:func:`_seeded_random`, which seeds that generator from the episode's key and restores the
caller's state afterwards. This is what lets DDP ranks take disjoint shards of one stream and
lets a resumed run continue the stream exactly.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import random
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional

import learn2learn as l2l
import numpy as np
import torch

from metarec.data.corpus import DataError
from metarec.data.family import Task, TaskFamily


@dataclass(frozen=True)
class EpisodeSpec:
    """Shape of an episode: ``n_way`` classes, ``n_shot`` support and ``n_query`` query each."""

    n_way: int
    n_shot: int
    n_query: int

    def __post_init__(self) -> None:
        for k in ("n_way", "n_shot", "n_query"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise DataError(f"{k} must be a positive integer, got {v!r}")


@dataclass
class EpisodeIndices:
    """Corpus rows and episode labels of one sampled episode (before model inputs)."""

    support_idx: torch.Tensor
    support_y: torch.Tensor
    query_idx: torch.Tensor
    query_y: torch.Tensor
    classes: list[str]
    task: str
    index: int


def stream_seed(seed: int, split: str, i: int) -> int:
    """A 63-bit seed for episode ``i`` of the ``split`` stream of run seed ``seed``."""
    digest = hashlib.sha256(f"{seed}/{split}/{i}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextlib.contextmanager
def _seeded_random(seed: int) -> Iterator[None]:
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


class _IndexDataset(torch.utils.data.Dataset):
    """Items are ``(corpus_row, class_id)``: learn2learn's LoadData then yields rows, not data."""

    def __init__(self, rows: np.ndarray, labels: np.ndarray) -> None:
        self.rows = rows
        self.labels = labels

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return int(self.rows[i]), int(self.labels[i])


class EpisodeSampler:
    """Draws episodes of one split of a :class:`TaskFamily`.

    For every task of the split, a learn2learn ``TaskDataset`` with the chain
    ``NWays → KShots(n_shot + n_query) → LoadData → RemapLabels``; the first ``n_shot`` rows of
    each class are the support set, the rest the query set. Tasks with a fixed support/query
    (e.g. the ARSC meta-test protocol) are returned as they are, never resampled.

    Args:
        family: the task family.
        split: ``"train"``, ``"val"`` or ``"test"``.
        spec: ``n_way``, ``n_shot``, ``n_query``.
        seed: seed of the stream; episode ``i`` depends only on ``(seed, split, i)``.
        task_weights: ``{glob: factor}`` (``fnmatch`` over task names): a matching task is drawn
            ``factor`` times as often as its size alone would have it (the product where several
            globs match). None: tasks are drawn in proportion to their size.

    Raises:
        DataError: if a task has fewer than ``n_way`` classes, or a class fewer than
            ``n_shot + n_query`` examples (the message names the task, class and count); if a
            glob of ``task_weights`` matches no task of the split, or a factor is not > 0.
    """

    def __init__(self, family: TaskFamily, split: str, spec: EpisodeSpec, seed: int,
                 task_weights: Optional[Mapping[str, float]] = None) -> None:
        self.family = family
        self.split = split
        self.spec = spec
        self.seed = int(seed)
        self.tasks: list[Task] = family.tasks(split)
        self._tasksets: list[object] = []
        self._weights = np.array([len(t.indices) for t in self.tasks], dtype=np.float64)
        self._weights *= self._factors(task_weights or {})
        self._weights /= self._weights.sum()
        for task in self.tasks:
            self._tasksets.append(None if task.fixed else self._build_taskset(task))

    def _factors(self, task_weights: Mapping[str, float]) -> np.ndarray:
        factors = np.ones(len(self.tasks))
        names = [t.name for t in self.tasks]
        for glob, factor in task_weights.items():
            where = f"episodes.task_weights[{glob!r}]"
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
                raise DataError(f"{where} = {factor!r}: the factor must be a number > 0")
            hit = np.array([fnmatch.fnmatchcase(n, str(glob)) for n in names], dtype=bool)
            if not hit.any():
                shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
                raise DataError(f"{where}: the glob matches no {self.split!r} task of family "
                                f"{self.family.name!r}; its tasks are {shown}")
            factors[hit] *= float(factor)
        return factors

    def _build_taskset(self, task: Task) -> object:
        spec = self.spec
        classes, counts = np.unique(task.labels, return_counts=True)
        where = f"family {self.family.name!r}, split {self.split!r}, task {task.name!r}"
        if len(classes) < spec.n_way:
            raise DataError(
                f"n_way={spec.n_way} but {where} has only {len(classes)} classes "
                f"({', '.join(self.family.class_names[c] for c in classes)})"
            )
        need = spec.n_shot + spec.n_query
        short = [(self.family.class_names[c], int(n)) for c, n in zip(classes, counts) if n < need]
        if short:
            listed = ", ".join(f"{name!r} has {n}" for name, n in short[:5])
            more = f" and {len(short) - 5} more" if len(short) > 5 else ""
            raise DataError(
                f"n_shot + n_query = {spec.n_shot} + {spec.n_query} = {need} examples per class needed, "
                f"but in {where} class {listed}{more}"
            )
        labels_to_indices = {int(c): np.flatnonzero(task.labels == c).tolist() for c in classes}
        indices_to_labels = {i: int(c) for i, c in enumerate(task.labels)}
        meta = l2l.data.MetaDataset(
            _IndexDataset(task.indices, task.labels),
            labels_to_indices=labels_to_indices,
            indices_to_labels=indices_to_labels,
        )
        transforms = [
            l2l.data.transforms.NWays(meta, n=spec.n_way),
            l2l.data.transforms.KShots(meta, k=need),
            l2l.data.transforms.LoadData(meta),
            l2l.data.transforms.RemapLabels(meta),
        ]
        return l2l.data.Taskset(meta, task_transforms=transforms, num_tasks=-1, task_collate=list)

    def _task_index(self, i: int) -> int:
        if len(self.tasks) == 1:
            return 0
        if all(t.fixed for t in self.tasks):
            # Fixed-support protocols (ARSC meta-test) evaluate every task once, in order.
            return i % len(self.tasks)
        rng = np.random.default_rng(stream_seed(self.seed, self.split + "/task", i))
        return int(rng.choice(len(self.tasks), p=self._weights))

    def sample(self, i: int) -> EpisodeIndices:
        """Episode ``i`` of this split's stream (deterministic)."""
        t = self._task_index(i)
        task = self.tasks[t]
        if task.fixed:
            return self._fixed(task, i)
        with _seeded_random(stream_seed(self.seed, self.split, i)):
            taskset = self._tasksets[t]
            description = taskset.sample_task_description()  # type: ignore[attr-defined]
            # Read each row's class before RemapLabels rewrites labels to 0..n_way-1.
            class_of = {dd.index: int(taskset.dataset.indices_to_labels[dd.index]) for dd in description}  # type: ignore[attr-defined]
            items = taskset.get_task(description)  # type: ignore[attr-defined]
        k = self.spec.n_shot + self.spec.n_query
        rows = torch.tensor([r for r, _ in items], dtype=torch.long)
        ys = torch.tensor([y for _, y in items], dtype=torch.long)
        classes = [""] * self.spec.n_way
        for dd, y in zip(description, ys.tolist()):
            classes[y] = self.family.class_names[class_of[dd.index]]
        is_support = (torch.arange(len(rows)) % k) < self.spec.n_shot
        return EpisodeIndices(
            support_idx=rows[is_support], support_y=ys[is_support],
            query_idx=rows[~is_support], query_y=ys[~is_support],
            classes=classes, task=task.name, index=i,
        )

    def _fixed(self, task: Task, i: int) -> EpisodeIndices:
        assert task.support is not None and task.query is not None
        # Episode labels follow the order of the family's class ids.
        row_class = dict(zip(task.indices.tolist(), task.labels.tolist()))
        classes = sorted({row_class[r] for r in task.support.tolist()})
        remap = {c: j for j, c in enumerate(classes)}
        return EpisodeIndices(
            support_idx=torch.as_tensor(task.support, dtype=torch.long),
            support_y=torch.tensor([remap[row_class[r]] for r in task.support.tolist()]),
            query_idx=torch.as_tensor(task.query, dtype=torch.long),
            query_y=torch.tensor([remap[row_class[r]] for r in task.query.tolist()]),
            classes=[self.family.class_names[c] for c in classes],
            task=task.name,
            index=i,
        )
