"""EpisodeLearner: what every learner of episodes shares, text classification or rating.

Both :class:`~metarec.algorithms.base.MetaLearner` (a text :class:`~metarec.episode.Episode`)
and :class:`~metarec.recsys.learner.RatingLearner` (a user task) derive from it. It owns, once:

* the training step: a meta-batch of episodes, one loss each, their mean; ``train/loss`` and
  ``train/<train_metric>``;
* the test step's timing (``adapt_s``: adaptation + prediction of one episode) and its
  per-episode record;
* gathering the records across DDP ranks (every rank gets all of them) and the test metrics
  computed from them, once (:attr:`test_metrics`, also logged);
* the optimizer (AdamW, Adam or SGD over :meth:`param_groups`) and the warm-up + cosine schedule.

A subclass says what an episode is (:attr:`episode_type`), how one trains
(:meth:`train_episode`), predicts (:meth:`predict_episode`) and is recorded (:meth:`test_record`),
and what the records sum up to (:meth:`summarize_test`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, ClassVar, Sequence

import lightning as L
import torch
from torch import Tensor

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
}
LR_SCHEDULES = ("cosine", "constant")


def lr_factor(warmup_steps: int, max_steps: int, schedule: str) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warm-up, then cosine decay to 0 at ``max_steps`` (or constant)."""
    warm, total = warmup_steps, max(max_steps, 1)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if schedule == "constant":
            return 1.0
        progress = min((step - warm) / max(total - warm, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def gather_records(trainer: L.Trainer, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's per-episode records on every rank, sorted by episode ``index``.

    Raises:
        RuntimeError: two records share an index (an episode was evaluated on two ranks).
    """
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, records)
        records = [r for part in gathered for r in part]
    records = sorted(records, key=lambda r: r["index"])
    index = [r["index"] for r in records]
    if len(set(index)) != len(index):
        raise RuntimeError(f"duplicated test episodes across ranks: {index}")
    return records


class EpisodeLearner(L.LightningModule):
    """Base of every learner: training step, timed test records, DDP gather, optimizer.

    Args:
        outer_lr: learning rate of the outer (meta) optimizer.
        weight_decay: the optimizer's weight decay.
        warmup_steps: linear warm-up steps of the learning rate.
        lr_schedule: ``"cosine"`` (decay to 0 at ``max_steps``) or ``"constant"``.
        max_steps: training steps (for the schedule); set by the runner from the trainer.
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"``.
    """

    #: False for methods without meta-training (e.g. frozen nearest prototype): `fit` is skipped.
    trains: ClassVar[bool] = True
    #: Constructor options of a base class that this class fixes, each with why: a config that sets
    #: one is refused by :func:`metarec.validate.validate_config`; an ``__init__`` that takes them in
    #: ``**kwargs`` refuses a direct keyword with :func:`refuse_fixed_options`.
    fixed_options: ClassVar[dict[str, str]] = {}
    #: What a batch holds (moved to the device by its own ``.to``).
    episode_type: ClassVar[type] = object
    #: The name of :meth:`train_episode`'s second value in the logs (``train/<name>``).
    train_metric: ClassVar[str] = "acc"

    def __init__(self, outer_lr: float = 1e-3, weight_decay: float = 0.0, warmup_steps: int = 0,
                 lr_schedule: str = "cosine", max_steps: int = 1000, optimizer: str = "adamw") -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {lr_schedule!r}")
        self.optimizer_name = optimizer
        self.outer_lr = float(outer_lr)
        self.weight_decay = float(weight_decay)
        self.warmup_steps = int(warmup_steps)
        self.lr_schedule = lr_schedule
        self.max_steps = int(max_steps)
        self.test_records: list[dict[str, Any]] = []
        #: The test metrics of the last test epoch, as exact Python floats (what a run reports).
        self.test_metrics: dict[str, float] = {}

    # -- the contract ---------------------------------------------------------------------------
    def train_episode(self, episode: Any) -> tuple[Tensor, Tensor]:
        """``(loss, metric)`` of one training episode: the differentiable query loss and a detached
        scalar logged as ``train/<train_metric>`` (mean over the meta-batch)."""
        raise NotImplementedError

    def predict_episode(self, episode: Any) -> Any:
        """Adapts to the episode's support set and predicts its query set (what a test step times)."""
        raise NotImplementedError

    def test_record(self, episode: Any, prediction: Any, adapt_s: float) -> dict[str, Any]:
        """The JSON-friendly record of one test episode; it must hold the episode's ``index``."""
        raise NotImplementedError

    def summarize_test(self, records: Sequence[dict[str, Any]]) -> dict[str, float]:
        """The ``test/*`` metrics of all test records (all ranks')."""
        raise NotImplementedError

    # -- Lightning hooks ------------------------------------------------------------------------
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, self.episode_type):
            return batch.to(device)
        if isinstance(batch, list):
            return [e.to(device) for e in batch]
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: list[Any], batch_idx: int) -> Tensor:
        losses, values = [], []
        for episode in batch:
            loss, value = self.train_episode(episode)
            losses.append(loss)
            values.append(value)
        loss = torch.stack(losses).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log(f"train/{self.train_metric}", torch.stack(values).mean(), prog_bar=True, batch_size=len(batch))
        return loss

    def on_test_epoch_start(self) -> None:
        self.test_records = []

    def test_step(self, episode: Any, batch_idx: int) -> None:
        t0 = time.perf_counter()
        prediction = self.predict_episode(episode)
        adapt_s = time.perf_counter() - t0
        self.test_records.append(self.test_record(episode, prediction, adapt_s))

    def on_test_epoch_end(self) -> None:
        self.test_records = gather_records(self.trainer, self.test_records)
        self.test_metrics = self.summarize_test(self.test_records)
        for key, value in self.test_metrics.items():
            self.log(key, value, rank_zero_only=False)

    # -- optimization ---------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (default: every trainable parameter at ``outer_lr``)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.outer_lr}] if params else []

    def configure_optimizers(self) -> Any:
        groups = self.param_groups()
        if not groups:
            raise RuntimeError(f"{type(self).__name__} has no trainable parameters (frozen encoder and no head?)")
        opt = OPTIMIZERS[self.optimizer_name](groups, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(self.warmup_steps, self.max_steps, self.lr_schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def refuse_fixed_options(cls: type, kwargs: dict[str, Any]) -> None:
    """Raises ``ValueError`` naming ``algorithm.<key>`` for a keyword in ``cls.fixed_options``."""
    for key, why in getattr(cls, "fixed_options", {}).items():
        if key in kwargs:
            raise ValueError(f"algorithm.{key}={kwargs[key]!r} cannot be set for {cls.__name__}: {why}")
