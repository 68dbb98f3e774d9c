"""The seeded training stream (row batches, then item tasks) and the fixed test set.

Training step ``i`` is drawn with ``numpy.random.default_rng([seed, i])``:

* steps ``< base_steps``: ``batch_size`` training rows (with replacement) — pre-training the base
  network and the old items' ID embeddings;
* then ``meta_steps`` steps of ``meta_batch_size`` meta-training items, each with two disjoint
  random batches ``a`` and ``b`` of ``k_shot`` of its rows (Meta-Embedding's cold-start and
  warm-up batches).

The test set is one batch: every test item's rows with their phase (warm-up a, b, c or query).
"""

from __future__ import annotations

import hashlib
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from metarec.recsys.family import FeatureTable
from metarec.recsys.ctr.family import CTRColdStartFamily


class TrainStream(Dataset):
    """Item ``i``: training step ``i``'s batch (module docstring)."""

    def __init__(self, family: CTRColdStartFamily, table: FeatureTable, base_steps: int, meta_steps: int,
                 batch_size: int, meta_batch_size: int, seed: int) -> None:
        self.family, self.table = family, table
        self.base_steps, self.meta_steps = int(base_steps), int(meta_steps)
        self.batch_size, self.meta_batch_size, self.seed = int(batch_size), int(meta_batch_size), int(seed)
        d, s = family.data, family.split
        # Rows of every meta-training item, grouped: the item-task draws are index arithmetic.
        rows = s.train_rows[np.isin(d.item[s.train_rows], s.meta_items)]
        self.meta_rows = rows[np.argsort(d.item[rows], kind="stable")]
        self.meta_start = np.searchsorted(d.item[self.meta_rows], s.meta_items)
        self.meta_count = np.bincount(d.item[self.meta_rows], minlength=d.n_items)[s.meta_items]

    def __len__(self) -> int:
        return self.base_steps + self.meta_steps

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, i])
        d, s, k = self.family.data, self.family.split, self.family.split.k_shot
        if i < self.base_steps:
            rows = s.train_rows[rng.integers(len(s.train_rows), size=self.batch_size)]
            return {"kind": "rows", "user": self.table.user_cat[torch.from_numpy(d.user[rows]).long()],
                    "item": torch.from_numpy(d.item[rows]).long(), "click": torch.from_numpy(d.click[rows])}
        pick = rng.choice(len(s.meta_items), size=min(self.meta_batch_size, len(s.meta_items)), replace=False)
        # 2k distinct positions per item: the first k are batch a, the next k batch b.
        pos = np.stack([rng.choice(int(self.meta_count[j]), size=2 * k, replace=False) for j in pick])
        rows = self.meta_rows[self.meta_start[pick][:, None] + pos]  # (m, 2k)
        user = self.table.user_cat[torch.from_numpy(d.user[rows]).long()]
        click = torch.from_numpy(d.click[rows])
        return {"kind": "items", "item": torch.from_numpy(s.meta_items[pick]).long(),
                "user_a": user[:, :k], "click_a": click[:, :k], "user_b": user[:, k:], "click_b": click[:, k:]}


def test_batch(family: CTRColdStartFamily, table: FeatureTable) -> dict[str, Any]:
    """Every test row: user inputs ``(m, n_user_fields)``, task ``(m,)``, phase ``(m,)``, click ``(m,)``;
    the test items ``(n_test,)``, their raw ids and per-item fingerprints (item, rows, phases, clicks)."""
    d, s = family.data, family.split
    rows = s.test_rows
    fps = []
    # Test rows are grouped by task (item, then time): one slice per item, not a mask over all rows.
    bounds = np.searchsorted(s.test_task, np.arange(len(s.test_items) + 1))
    for t, item in enumerate(s.test_items.tolist()):
        sel = slice(bounds[t], bounds[t + 1])
        h = hashlib.sha256(f"{family.name}\0{d.item_ids[item]}\0".encode())
        for a in (d.user[rows[sel]], d.time[rows[sel]], s.test_phase[sel], d.click[rows[sel]]):
            h.update(np.ascontiguousarray(a).tobytes())
        fps.append(h.hexdigest()[:16])
    return {"kind": "test", "items": torch.from_numpy(s.test_items).long(),
            "item_ids": [d.item_ids[i] for i in s.test_items.tolist()], "fingerprints": fps,
            "user": table.user_cat[torch.from_numpy(d.user[rows]).long()],
            "task": torch.from_numpy(s.test_task).long(), "phase": torch.from_numpy(s.test_phase).long(),
            "click": torch.from_numpy(d.click[rows])}


def _identity(batch: Any) -> Any:
    return batch


class CTRDataModule(L.LightningDataModule):
    """The training stream and the one-batch test set (module docstring). Single process only."""

    def __init__(self, family: CTRColdStartFamily, table: FeatureTable, base_steps: int, meta_steps: int,
                 batch_size: int = 256, meta_batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.family, self.table, self.seed = family, table, int(seed)
        self.kw = dict(base_steps=base_steps, meta_steps=meta_steps, batch_size=batch_size,
                       meta_batch_size=meta_batch_size)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TrainStream(self.family, self.table, seed=self.seed, **self.kw), batch_size=None,
                          shuffle=False, collate_fn=_identity)

    def test_dataloader(self) -> DataLoader:
        return DataLoader([test_batch(self.family, self.table)], batch_size=None, collate_fn=_identity)
