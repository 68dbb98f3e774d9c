"""Lightning callbacks that every metarec trainer shares.

``LastCheckpoint`` keeps ``last.ckpt`` on the newest validated (and, at the end, the final) step.
Lightning 2.6's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only in a step where
it also saved a top-k checkpoint, so with ``save_top_k=1`` the "last" file stops moving at the
best validation and resuming from it silently loses every step since (see
Lightning-AI/pytorch-lightning 2.6.0 ``on_validation_end``). Built on public API only: the
``Checkpoint`` base class, the ``on_validation_end``/``on_train_end`` hooks and
``Trainer.save_checkpoint`` (which goes through the strategy's ``CheckpointIO``, so plugins such
as checksums see this file too).
"""

from __future__ import annotations

import os
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn


class LastCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt`` after every validation during fit and once after training.

    Lightning runs all ``Checkpoint`` callbacks after the others and in the order given, so placed
    after a ``ModelCheckpoint`` on ``val/acc`` this file also records that validation's best
    score and path: a resume from it continues the best-model bookkeeping exactly.

    Args:
        dirpath: folder of the checkpoint (created by ``Trainer.save_checkpoint``).
        filename: file name inside ``dirpath``.
    """

    def __init__(self, dirpath: str | os.PathLike[str], filename: str = "last.ckpt") -> None:
        self.path = os.path.join(os.fspath(dirpath), filename)
        self.saved_step: Optional[int] = None  # the global step last.ckpt holds (this process only)

    def save(self, trainer: L.Trainer) -> None:
        """Saves the trainer's full state to :attr:`path` unless this step is already there.

        Nothing is written by ``fast_dev_run``, outside ``fit`` (``validate``/``test``) or before the
        first optimizer step. Every rank calls ``Trainer.save_checkpoint`` (it is collective under
        DDP); rank 0 writes the file.
        """
        if (trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING
                or trainer.global_step == 0 or self.saved_step == trainer.global_step):
            return
        trainer.save_checkpoint(self.path)
        self.saved_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The final step is not validated when max_steps is not a multiple of val_check_interval.
        self.save(trainer)
