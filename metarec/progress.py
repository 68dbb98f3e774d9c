"""Progress of fit, validation and test in the log (a Lightning callback over :class:`metarec.log.Progress`).

Lightning's progress bar is a tqdm bar: useful on a terminal, absent from a run redirected to a
file. :class:`LogProgress` logs ``phase: done/total steps (pct), rate, ETA`` lines there instead,
every ``$METAREC_PROGRESS_SECONDS`` (default 30 s), from global rank 0 only.
"""

from __future__ import annotations

from typing import Any, Optional

import lightning as L

from metarec.log import Progress, get_logger

log = get_logger(__name__)


def _total(batches: Any) -> Optional[int]:
    """Sum of Lightning's per-dataloader batch counts (a list, or an int; ``inf`` = unknown)."""
    values = batches if isinstance(batches, (list, tuple)) else [batches]
    try:
        total = sum(values)
        return int(total) if total != float("inf") else None
    except (TypeError, OverflowError):
        return None


class LogProgress(L.Callback):
    """Logs the progress of fit (optimizer steps), validation and test (episodes) at a steady interval.

    Args:
        interval: seconds between lines; ``None``: ``$METAREC_PROGRESS_SECONDS`` or 30.
        enabled: ``None``: only when stderr is not a TTY (on a terminal the tqdm bar shows it).
    """

    def __init__(self, interval: Optional[float] = None, enabled: Optional[bool] = None) -> None:
        self.interval = interval
        self.enabled = enabled
        self._bars: dict[str, Progress] = {}

    def _start(self, trainer: L.Trainer, phase: str, what: str, total: Optional[int], unit: str) -> None:
        enabled = self.enabled if trainer.is_global_zero else False
        self._bars[phase] = Progress(log, what, total, unit=unit, interval=self.interval, enabled=enabled)

    def _step(self, phase: str) -> None:
        if phase in self._bars:
            self._bars[phase].update(1)

    def _end(self, phase: str) -> None:
        bar = self._bars.pop(phase, None)
        if bar is not None and bar.done:
            bar.close()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.max_steps - trainer.global_step if trainer.max_steps > 0 else None
        self._start(trainer, "fit", "fit", total, "steps")

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._step("fit")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("fit")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, "validate", "validation", _total(trainer.num_val_batches), "episodes")

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._step("validate")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("validate")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, "test", "test", _total(trainer.num_test_batches), "episodes")

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._step("test")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("test")
