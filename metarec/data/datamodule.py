"""EpisodicDataModule: seeded episode streams for training, fixed episode sets for val/test.

Training: step ``t`` of rank ``r`` (of ``W``) gets episodes ``(t*W + r)*B ... (t*W + r)*B + B-1``
of the training stream (``B`` = meta-batch size per rank). One process with meta-batch
``W*B`` therefore sees exactly the episodes of a ``W``-rank DDP run, and a resumed run
continues the stream at ``trainer.global_step``. Lightning's distributed sampler must be off
(``Trainer(use_distributed_sampler=False)``, set by :func:`metarec.training.build_trainer`).

Val/test: episodes ``0 .. n-1`` of streams seeded by ``eval_seed`` — identical for every
method and training seed, so results can be paired. Under DDP rank ``r`` evaluates episodes
``r, r+W, ...``; the algorithm gathers per-episode results across ranks.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from metarec.data.family import TaskFamily
from metarec.data.sampler import EpisodeSampler, EpisodeSpec
from metarec.episode import Episode
from metarec.models.features import FeatureStore


class EpisodeDataset(Dataset):
    """Map-style dataset: item ``i`` is episode ``i`` of a sampler's stream, with model inputs."""

    def __init__(self, sampler: EpisodeSampler, features: FeatureStore, length: int) -> None:
        self.sampler = sampler
        self.features = features
        self.length = length
        self.corpus_hash = features.texts_hash  # the store holds this family's corpus texts

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Episode:
        e = self.sampler.sample(i)
        return Episode(
            support_x=self.features(e.support_idx), support_y=e.support_y,
            query_x=self.features(e.query_idx), query_y=e.query_y,
            classes=e.classes, family=self.sampler.family.name, task=e.task,
            support_idx=e.support_idx, query_idx=e.query_idx, index=e.index, corpus=self.corpus_hash,
        )


class MetaBatchSampler(Sampler[list[int]]):
    """Yields, for each remaining training step, this rank's meta-batch of episode indices.

    With ``accumulate = k`` (``trainer.accumulate_grad_batches``) a step is ``k`` consecutive
    meta-batches whose gradients Lightning sums into one outer step: step ``t`` of rank ``r``
    gets episodes ``(t*W + r)*k*B ... (t*W + r)*k*B + k*B - 1``, the very episodes of one
    meta-batch of ``k*B``, so accumulation, DDP and resume stay equivalent.
    """

    def __init__(self, meta_batch_size: int, max_steps: int, world: Callable[[], tuple[int, int, int]],
                 accumulate: int = 1) -> None:
        if accumulate < 1:
            raise ValueError(f"trainer.accumulate_grad_batches must be >= 1, got {accumulate}")
        self.meta_batch_size = meta_batch_size
        self.max_steps = max_steps
        self.world = world  # () -> (start_step, rank, world_size), read when iteration starts
        self.accumulate = accumulate

    def __len__(self) -> int:
        start, _, _ = self.world()
        return max(self.max_steps - start, 0) * self.accumulate

    def __iter__(self) -> Iterator[list[int]]:
        start, rank, size = self.world()
        b, k = self.meta_batch_size, self.accumulate
        for t in range(start, self.max_steps):
            for j in range(k):
                first = ((t * size + rank) * k + j) * b
                yield list(range(first, first + b))


class StreamLoader(DataLoader):
    """The training stream's DataLoader: resumable, as Lightning's ``_Stateful`` protocol asks.

    Its position needs no saving: :class:`MetaBatchSampler` starts at ``trainer.global_step``,
    which the checkpoint restores. Its state is what makes the stream the same one (seed,
    meta-batch size, accumulation), checked on load, so a resume mid-stream is exact and known
    to be (without the protocol Lightning warns that it may not be).
    """

    def __init__(self, dataset: Dataset, batch_sampler: MetaBatchSampler, seed: int, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self.stream_seed = int(seed)

    def state_dict(self) -> dict[str, int]:
        """What identifies the stream; the position is the restored ``trainer.global_step``."""
        sampler = self.batch_sampler
        return {"seed": self.stream_seed, "meta_batch_size": sampler.meta_batch_size, "accumulate": sampler.accumulate}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Checks that the checkpoint's stream is this one.

        Raises:
            ValueError: naming each value that differs.
        """
        ours = self.state_dict()
        differ = [f"{k}: {state[k]} in the checkpoint, {ours[k]} here" for k in ours if k in state and state[k] != ours[k]]
        if differ:
            raise ValueError("resume_from: the checkpoint was trained on another episode stream ("
                             + "; ".join(differ) + "); resume with the values it was trained with")


class ShardSampler(Sampler[int]):
    """Episodes ``rank, rank + W, ...`` of a fixed evaluation set."""

    def __init__(self, n: int, world: Callable[[], tuple[int, int, int]]) -> None:
        self.n = n
        self.world = world

    def __len__(self) -> int:
        _, rank, size = self.world()
        return len(range(rank, self.n, size))

    def __iter__(self) -> Iterator[int]:
        _, rank, size = self.world()
        return iter(range(rank, self.n, size))


def first(batch: list[Any]) -> Any:
    """Collate of a fixed evaluation set: batches of one episode are the episode itself."""
    return batch[0]


def as_list(batch: list[Any]) -> list[Any]:
    """Collate of the training stream: a meta-batch is a list of episodes."""
    return batch


class ShardedDataModule(L.LightningDataModule):
    """A seeded training stream sharded over steps and ranks; fixed evaluation sets sharded over ranks.

    The base of every data module of episodes (text :class:`EpisodicDataModule`, the cold-start
    family's user tasks): how episodes are indexed, batched, sharded and seeded lives here once.

    Args:
        meta_batch_size: episodes per optimizer step and rank.
        max_steps: training steps (the training stream's length).
        seed: seed of the training stream and of the DataLoaders' generators.
        num_workers: DataLoader workers (0: episodes are cheap lookups).
        accumulate: meta-batches per optimizer step (``trainer.accumulate_grad_batches``).
    """

    def __init__(self, meta_batch_size: int, max_steps: int, seed: int, num_workers: int = 0,
                 accumulate: int = 1) -> None:
        super().__init__()
        self.meta_batch_size = int(meta_batch_size)
        self.max_steps = int(max_steps)
        self.seed = int(seed)
        self.num_workers = num_workers
        self.accumulate = int(accumulate)

    def world(self) -> tuple[int, int, int]:
        """``(start_step, rank, world_size)`` of the attached trainer (``(0, 0, 1)`` without one)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 1
        return int(trainer.global_step), int(trainer.global_rank), int(trainer.world_size)

    def generator(self) -> torch.Generator:
        # Creating a DataLoader iterator draws a base seed from its generator; with the default
        # (global) one, every validation would shift the dropout RNG and break exact resume.
        return torch.Generator().manual_seed(self.seed)

    def stream_loader(self, dataset: Dataset) -> DataLoader:
        """This rank's meta-batches of a training stream (item ``i`` = episode ``i``), from the current step."""
        return StreamLoader(dataset, MetaBatchSampler(self.meta_batch_size, self.max_steps, self.world, self.accumulate),
                            self.seed, collate_fn=as_list, num_workers=self.num_workers, generator=self.generator())

    def fixed_loader(self, dataset: Dataset) -> DataLoader:
        """This rank's share of a fixed evaluation set, one episode at a time."""
        return DataLoader(dataset, batch_size=1, sampler=ShardSampler(len(dataset), self.world), collate_fn=first,
                          num_workers=self.num_workers, generator=self.generator())


class EpisodicDataModule(ShardedDataModule):
    """Episodes of one task family for fit / validate / test.

    Args:
        family: the task family.
        features: model inputs for the family's corpus rows.
        n_way, n_shot, n_query: episode shape (config values).
        meta_batch_size: episodes per optimizer step and rank.
        max_steps: training steps (the training stream's length).
        seed: seed of the training stream.
        eval_seed: seed of the fixed validation and test episode sets.
        val_episodes, test_episodes: sizes of those sets (fixed-support tasks such as the
            ARSC meta-test count one episode per task, whatever ``test_episodes`` says).
        num_workers: DataLoader workers (0: episodes are cheap lookups).
        accumulate: meta-batches per optimizer step (``trainer.accumulate_grad_batches``).
        task_weights: ``{glob: factor}`` over training task names (``episodes.task_weights``):
            how much more often matching tasks are drawn for training; validation and test
            episode sets are never reweighted.
    """

    def __init__(
        self,
        family: TaskFamily,
        features: FeatureStore,
        n_way: int,
        n_shot: int,
        n_query: int,
        meta_batch_size: int = 4,
        max_steps: int = 100,
        seed: int = 0,
        eval_seed: int = 1234,
        val_episodes: int = 100,
        test_episodes: int = 600,
        num_workers: int = 0,
        accumulate: int = 1,
        task_weights: Optional[Mapping[str, float]] = None,
    ) -> None:
        super().__init__(meta_batch_size, max_steps, seed, num_workers, accumulate)
        self.task_weights = dict(task_weights or {})
        self.family = family
        self.features = features
        self.spec = EpisodeSpec(n_way, n_shot, n_query)
        self.eval_seed = int(eval_seed)
        self.val_episodes = int(val_episodes)
        self.test_episodes = int(test_episodes)
        self._samplers: dict[str, EpisodeSampler] = {}

    def sampler(self, split: str) -> EpisodeSampler:
        """The (validated, cached) sampler of a split; building it checks n_way / n_shot."""
        if split not in self._samplers:
            seed = self.seed if split == "train" else self.eval_seed
            weights = self.task_weights if split == "train" else None
            self._samplers[split] = EpisodeSampler(self.family, split, self.spec, seed, task_weights=weights)
        return self._samplers[split]

    def n_eval_episodes(self, split: str) -> int:
        tasks = self.family.tasks(split)
        if all(t.fixed for t in tasks):
            return len(tasks)
        return self.val_episodes if split == "val" else self.test_episodes

    def eval_dataset(self, split: str) -> EpisodeDataset:
        return EpisodeDataset(self.sampler(split), self.features, self.n_eval_episodes(split))

    def setup(self, stage: Optional[str] = None) -> None:
        # Build samplers early so bad n_way/n_shot fail before any training.
        for split in ("train", "val") if stage in (None, "fit") else ("test",) if stage == "test" else ("val",):
            self.sampler(split)

    def train_dataloader(self) -> DataLoader:
        return self.stream_loader(EpisodeDataset(self.sampler("train"), self.features, length=2**62))

    def val_dataloader(self) -> DataLoader:
        return self.fixed_loader(self.eval_dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.fixed_loader(self.eval_dataset("test"))
