"""The multi-task stage shared by Baseline/Baseline++ and the ARSC recipe.

Plain supervised training over the family's *global* label space: every training step pools the
support and query rows of its meta-batch of training episodes and trains the encoder's trainable
part (freeze policy) plus one classifier with a row per meta-training class (Chen et al., ICLR
2019, arXiv:1904.04232). What happens at validation and test time — a new head per episode — is
the subclass's :meth:`~metarec.algorithms.base.MetaLearner.episode_forward`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.algorithms.base import MetaLearner, concat_inputs
from metarec.data.family import TaskFamily
from metarec.episode import Episode
from metarec.models.heads import LinearHead

TRAIN_SOFTMAX = ("all", "episode")


class MultiTaskStage(MetaLearner):
    """Trains the encoder's trainable part and one head over every meta-training class.

    Drawing the rows from the datamodule's training stream keeps the stream's seeding, DDP
    sharding and resume, and guarantees that only training-split rows are used;
    :meth:`global_labels` additionally refuses any class that is not a meta-training class (a
    test relies on it). The class list comes from the datamodule's family in :meth:`setup` (or
    an explicit :meth:`bind_family` call), before optimizers and checkpoint loading need the head.

    Subclasses choose the head (:meth:`make_train_head`) and what a head row stands for
    (:meth:`row_of_class`: by default each training class has its own row).

    Args:
        train_softmax: ``"all"`` — one softmax over every meta-training class (Chen et al.);
            ``"episode"`` — each row competes only with the classes of its own episode (a
            multi-task model with one head per task). Use ``"episode"`` when tasks share
            inputs with conflicting labels (ARSC: one review, three rating thresholds).
        backward_chunks: back-propagate each length chunk of a training step
            (:meth:`~metarec.models.encoder.TextEncoder.length_chunks`, ``encoder.length_buckets``)
            as soon as it is forwarded, so that one chunk's activations are alive at a time
            instead of the whole step's: the step's peak memory drops by about the factor
            ``length_buckets`` at the same work. The gradient is the same sum in another float
            order (last digits move). Uses Lightning's manual optimization, so it cannot take
            ``trainer.gradient_clip_val`` or ``trainer.accumulate_grad_batches`` > 1 (the
            config check refuses both by name; Lightning itself refuses them at ``fit``).
        **kwargs: see :class:`MetaLearner`.
    """

    def __init__(self, train_softmax: str = "all", backward_chunks: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if train_softmax not in TRAIN_SOFTMAX:
            raise ValueError(f"{type(self).__name__} train_softmax must be one of {TRAIN_SOFTMAX}, got {train_softmax!r}")
        self.train_softmax = train_softmax
        self.backward_chunks = bool(backward_chunks)
        # Lightning's own switch: training_step then runs backward and the optimizer itself.
        self.automatic_optimization = not self.backward_chunks
        self.train_classes: list[str] = []
        #: What each row of the training head stands for: a training class, or a shared key.
        self.head_rows: list[str] = []
        self.family_name = ""
        self._head_row: dict[str, int] = {}     # head_rows entry -> its row
        self._class_index: dict[str, int] = {}  # training class name -> head row
        self.train_head: nn.Module | None = None
        #: Names of every class the multi-task stage has trained on (tests check it).
        self.seen_classes: set[str] = set()

    # -- what the subclass decides ----------------------------------------------------------
    def make_train_head(self, n_rows: int) -> nn.Module:
        """The training head ``(batch, dim) -> (batch, n_rows)``."""
        # Not zero-initialized: a zero head sends no gradient to the encoder at first.
        return LinearHead(self.encoder.dim, n_rows, zero_init=False)

    def row_of_class(self, name: str) -> str:
        """What the head row of training class ``name`` stands for (by default the class itself)."""
        return name

    # -- the global label space -------------------------------------------------------------
    def bind_family(self, family: TaskFamily) -> None:
        """Builds the training head over the meta-training classes of ``family`` (once)."""
        names = [family.class_names[c] for c in family.split_classes("train")]
        if len(set(family.class_names)) != len(family.class_names):
            raise ValueError(f"family {family.name!r} has duplicated class names; {type(self).__name__} maps names to ids")
        if self.train_head is not None:
            if names != self.train_classes:
                raise RuntimeError(f"{type(self).__name__} is bound to the training classes of family "
                                   f"{self.family_name!r} and cannot be re-bound to {family.name!r}")
            return
        self.family_name = family.name
        self.train_classes = names
        rows = [self.row_of_class(n) for n in names]
        # One row per class in the family's order; shared rows (several classes each) sorted.
        self.head_rows = names if rows == names else sorted(set(rows))
        self._head_row = {r: i for i, r in enumerate(self.head_rows)}
        self._class_index = {n: self._head_row[r] for n, r in zip(names, rows)}
        self.train_head = self.make_train_head(len(self.head_rows)).to(self.device)

    def setup(self, stage: str) -> None:
        if self.train_head is not None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        family = getattr(dm, "family", None)
        if family is None:
            raise RuntimeError(f"{type(self).__name__} needs the family's class list: run it with an "
                               "EpisodicDataModule, or call bind_family(family) before fit/test")
        self.bind_family(family)

    def global_labels(self, episode: Episode) -> Tensor:
        """Training-head row of each episode label ``(n_way,)``; only meta-training classes."""
        ids = []
        for name in episode.classes:
            if name not in self._class_index:
                raise RuntimeError(
                    f"{type(self).__name__}: episode {episode.index} (task {episode.task!r}, family "
                    f"{episode.family!r}) holds class {name!r}, which is not a meta-training class of "
                    f"{self.family_name!r}; the multi-task stage must never see validation or test classes"
                )
            ids.append(self._class_index[name])
        if len(set(ids)) < len(ids):
            rows = [self.head_rows[i] for i in ids]
            raise RuntimeError(f"{type(self).__name__}: episode {episode.index} (task {episode.task!r}) has classes "
                               f"{list(episode.classes)} that share a head row ({rows})")
        return torch.tensor(ids, dtype=torch.long, device=episode.support_y.device)

    # -- training -----------------------------------------------------------------------------
    def training_step(self, batch: list[Episode], batch_idx: int) -> Tensor:
        if self.train_head is None:
            raise RuntimeError(f"{type(self).__name__}.training_step before bind_family/setup")
        x: Any = None
        ys, episode_ids = [], []
        for episode in batch:
            ids = self.global_labels(episode)
            ep_x = concat_inputs(episode.support_x, episode.query_x)
            x = ep_x if x is None else concat_inputs(x, ep_x)
            ys.append(ids[torch.cat([episode.support_y, episode.query_y])])
            episode_ids.append(ids)
            self.seen_classes.update(episode.classes)
        y = torch.cat(ys)
        allowed = None
        if self.train_softmax == "episode":
            # Mask every class outside a row's own episode: one binary (n_way) softmax per task.
            allowed = torch.zeros(len(y), len(self.head_rows), dtype=torch.bool, device=y.device)
            start = 0
            for rows, ids in zip(ys, episode_ids):
                allowed[start : start + len(rows), ids] = True
                start += len(rows)

        def masked(logits: Tensor, rows: Optional[Tensor] = None) -> Tensor:
            if allowed is None:
                return logits
            return logits.masked_fill(~(allowed if rows is None else allowed[rows]), float("-inf"))

        if self.backward_chunks:
            loss, logits = self._chunked_step(x, y, masked)
        else:
            loss, logits = self.head_loss(self.encoder(x), y, masked)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/acc", self._accuracy(logits.detach(), y), prog_bar=True, batch_size=len(batch))
        return loss

    def head_loss(self, z: Tensor, y: Tensor, masked: Callable[[Tensor], Tensor],
                  reduction: str = "mean") -> tuple[Tensor, Tensor]:
        """The training loss of embeddings ``z (B, dim)`` with head rows ``y (B,)``.

        Args:
            masked: sets the logits of the classes a row must not compete with to ``-inf``
                (``train_softmax="episode"``).
            reduction: of the cross-entropy over the rows, ``"mean"`` or ``"sum"``.

        Returns:
            the loss and the training head's (masked) logits ``(B, n_rows)``.
        """
        logits = masked(self.train_head(z))
        return F.cross_entropy(logits, y, reduction=reduction), logits

    def _chunked_step(self, x: Any, y: Tensor, masked: Callable[..., Tensor]) -> tuple[Tensor, Tensor]:
        """One optimizer step that back-propagates each length chunk on its own (``backward_chunks``).

        The chunks are the ones the encoder's forward would run, in the same order (the same
        dropout draws); each contributes its rows' summed loss over the batch size, so the
        accumulated gradient is that of the mean loss over the batch.

        Returns:
            the batch's mean loss (detached) and its logits ``(B, n_rows)`` (detached).
        """
        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad()
        n = len(y)
        if isinstance(x, dict) and "hidden_states" in x:
            hidden, mask = x["hidden_states"], x["attention_mask"]
            chunks = self.encoder.length_chunks(mask)
        else:  # token or embedding inputs: one chunk
            chunks = [(torch.arange(n, device=y.device), None)]
        total = torch.zeros((), device=y.device)
        logits_all: Optional[Tensor] = None
        for rows, width in chunks:
            if width is None:
                z = self.encoder(x)
            else:
                z = self.encoder.run_top(hidden[rows, :width], mask[rows, :width], bucket=False)
            loss, logits = self.head_loss(z, y[rows], lambda lg, r=rows: masked(lg, r), reduction="sum")
            loss = loss / n
            self.manual_backward(loss)
            total += loss.detach()
            if logits_all is None:
                logits_all = logits.new_empty((n, logits.shape[1]))
            logits_all[rows] = logits.detach()
        opt.step()
        if sched is not None:
            sched.step()
        assert logits_all is not None
        return total, logits_all
