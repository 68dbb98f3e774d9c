"""The cold-start data module: a seeded stream of training user tasks, the fixed validation and test tasks."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from metarec.data.datamodule import ShardedDataModule
from metarec.recsys.episode import RatingEpisode
from metarec.recsys.family import ColdStartFamily, FeatureTable
from metarec.recsys.split import STATES, UserTask


def _episode(family: ColdStartFamily, table: FeatureTable, task: UserTask, support: np.ndarray, query: np.ndarray,
             index: int) -> RatingEpisode:
    d = family.data
    s_items, q_items = torch.from_numpy(d.item[support]), torch.from_numpy(d.item[query])
    return RatingEpisode(
        user_x=table.user_cat[task.user], support_x=table.items(s_items),
        support_y=torch.from_numpy(d.rating[support]), query_x=table.items(q_items),
        query_y=torch.from_numpy(d.rating[query]), state=task.state, user=d.user_ids[task.user],
        support_items=s_items, query_items=q_items, index=index, family=family.name,
    )


class TrainTasks(Dataset):
    """Item ``i``: a training user drawn with seed ``(seed, i)``, ``n_query`` query ratings, the rest support."""

    def __init__(self, family: ColdStartFamily, table: FeatureTable, seed: int) -> None:
        self.family, self.table, self.seed = family, table, int(seed)

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, i: int) -> RatingEpisode:
        rng = np.random.default_rng([self.seed, i])
        tasks = self.family.split.train
        task = tasks[int(rng.integers(len(tasks)))]
        perm = rng.permutation(task.rows)
        n_q = self.family.n_query
        return _episode(self.family, self.table, task, perm[n_q:], perm[:n_q], i)


class FixedTasks(Dataset):
    """Fixed user tasks (support and query drawn by the split): by default the test tasks of all four
    states, in state order; or the given ones (the validation users)."""

    def __init__(self, family: ColdStartFamily, table: FeatureTable, tasks: Optional[list[UserTask]] = None) -> None:
        self.family, self.table = family, table
        self.tasks = [t for s in STATES for t in family.split.test[s]] if tasks is None else list(tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, i: int) -> RatingEpisode:
        t = self.tasks[i]
        assert t.support is not None and t.query is not None
        return _episode(self.family, self.table, t, t.support, t.query, i)


class ColdStartDataModule(ShardedDataModule):
    """Seeded stream of training user tasks; the fixed test tasks of the four states.

    Validation tasks (:meth:`val_dataloader`) exist when the split holds out validation users
    (``family.split.val_users`` > 0); MeLU has none, so by default there are none.
    """

    def __init__(self, family: ColdStartFamily, table: FeatureTable, meta_batch_size: int = 32,
                 max_steps: int = 100, seed: int = 0) -> None:
        super().__init__(meta_batch_size, max_steps, seed)
        self.family, self.table = family, table

    def train_dataloader(self) -> DataLoader:
        return self.stream_loader(TrainTasks(self.family, self.table, self.seed))

    def val_dataloader(self) -> DataLoader:
        return self.fixed_loader(FixedTasks(self.family, self.table, self.family.split.val))

    def test_dataloader(self) -> DataLoader:
        return self.fixed_loader(FixedTasks(self.family, self.table))
