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
from lightning.pytorch.callbacks import Checkpoint, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class LastCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt`` after every validation during fit and once after training.

    With ``every_n_steps`` it is also rewritten after every ``every_n_steps``-th optimizer step
    (``trainer.checkpoint_every_n_steps``), so that a run validated only at its end, such as the
    ARSC recipe, loses at most that many steps when its process is killed; ``resume_from`` then
    continues exactly as from a validated step (Lightning's own ``every_n_train_steps`` hook point,
    ``on_train_batch_end``).

    Lightning runs all ``Checkpoint`` callbacks after the others and in the order given, so placed
    after a ``ModelCheckpoint`` on ``val/acc`` this file also records that validation's best
    score and path: a resume from it continues the best-model bookkeeping exactly.

    Args:
        dirpath: folder of the checkpoint (created by ``Trainer.save_checkpoint``).
        filename: file name inside ``dirpath``.
        every_n_steps: also save after every this many optimizer steps (``None``: only as above).
    """

    def __init__(self, dirpath: str | os.PathLike[str], filename: str = "last.ckpt",
                 every_n_steps: Optional[int] = None) -> None:
        if every_n_steps is not None and (isinstance(every_n_steps, bool) or int(every_n_steps) != every_n_steps
                                          or every_n_steps < 1):
            raise ValueError(f"trainer.checkpoint_every_n_steps must be null or an integer >= 1, got {every_n_steps!r}")
        self.path = os.path.join(os.fspath(dirpath), filename)
        self.every_n_steps = None if every_n_steps is None else int(every_n_steps)
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

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        # Under gradient accumulation several batches share a global step; save() writes it once.
        if self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The final step is not validated when max_steps is not a multiple of val_check_interval.
        self.save(trainer)


class UniformWeightAveraging(WeightAveraging):
    """The uniform average of the weights after every optimizer step from ``start_step`` on.

    Dense stochastic weight averaging along one run (SWA, Izmailov et al. 2018; dense as in SWAD,
    Cha et al., NeurIPS 2021, which averages every step for unseen-domain generalization) on
    Lightning's public ``WeightAveraging`` callback: validation, the final weights, the test and
    every checkpoint's ``state_dict`` are the average; a checkpoint also keeps the current weights
    (``current_model_state``), so a resume continues both. Buffers are not averaged (metarec's
    models have no batch norm; their buffers are position ids).

    Args:
        start_step: the first optimizer step (1-based) whose weights enter the average.
    """

    def __init__(self, start_step: int) -> None:
        if start_step < 1:
            raise ValueError(f"UniformWeightAveraging start_step must be >= 1, got {start_step}")
        super().__init__(use_buffers=False)
        self.start_step = int(start_step)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning sets callbacks up before the module, and metarec's modules build their heads in
        # their own (idempotent) setup(): run it first, so that the average copies the whole model.
        if stage == "fit":
            pl_module.setup(stage)
        super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            # Testing a checkpoint, as a fit does with its best one: Lightning has loaded
            # its "state_dict", the average, into the module; its callback would now overwrite that
            # with "current_model_state", the last step's weights, and test those instead.
            return
        # metarec's modules leave their frozen weights out of "state_dict" (the average); they are the
        # same in the current weights, which Lightning's callback keeps whole in "current_model_state".
        current = checkpoint.get("current_model_state")
        if self._average_model is not None and current is not None:
            checkpoint = {**checkpoint, "state_dict": {**current, **checkpoint["state_dict"]}}
        super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        # step_idx is zero-based: the weights after optimizer step step_idx + 1.
        return step_idx is not None and step_idx + 1 >= self.start_step
