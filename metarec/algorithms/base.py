"""MetaLearner: the one LightningModule every algorithm and baseline derives from.

An algorithm implements a single method, :meth:`MetaLearner.episode_forward`, which takes an
:class:`~metarec.episode.Episode` and returns the query loss and query logits. Everything else
lives here or in :class:`~metarec.learner.EpisodeLearner` (shared with the recommenders) once:
meta-batches, logging, optimizers and schedules, torchmetrics accuracy and macro-F1, per-episode
test records gathered across DDP ranks, and checkpoint hooks.
"""

from __future__ import annotations

import math
import random
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.aggregation import CatMetric
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from metarec.checkpoint import CheckpointError, trainable_layers
from metarec.episode import Episode, Inputs
from metarec.evaluation.stats import mean_ci95
from metarec.learner import EpisodeLearner, lr_factor
from metarec.models.encoder import TextEncoder

__all__ = ["MetaLearner", "concat_inputs", "lr_factor"]  # lr_factor: re-exported for older imports


def concat_inputs(a: Inputs, b: Inputs) -> Inputs:
    """Concatenates two input batches along the batch axis (pads token/hidden widths)."""
    if isinstance(a, Tensor):
        return torch.cat([a, b])  # type: ignore[list-item]
    assert isinstance(b, dict)
    width = max(a["attention_mask"].shape[1], b["attention_mask"].shape[1])
    out = {}
    for k in a:
        xa, xb = a[k], b[k]
        pads = []
        for x in (xa, xb):
            pad = [0, 0] * (x.dim() - 2) + [0, width - x.shape[1]]
            pads.append(F.pad(x, pad))
        out[k] = torch.cat(pads)
    return out


class MetaLearner(EpisodeLearner):
    """Base class of meta-learners and baselines.

    Args:
        encoder: the text encoder (its freeze policy decides what trains).
        n_way: classes per episode.
        outer_lr: learning rate of the outer (meta) optimizer for heads and other parameters.
        encoder_lr: learning rate of trainable encoder layers (default: ``outer_lr``).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps of the learning rate.
        lr_schedule: ``"cosine"`` (decay to 0 at ``max_steps``) or ``"constant"``.
        max_steps: training steps (for the schedule); set by the runner from the trainer.
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (outer loop).
    """

    episode_type = Episode

    def __init__(
        self,
        encoder: TextEncoder,
        n_way: int,
        outer_lr: float = 1e-3,
        encoder_lr: Optional[float] = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_schedule: str = "cosine",
        max_steps: int = 1000,
        optimizer: str = "adamw",
    ) -> None:
        super().__init__(outer_lr=outer_lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                         lr_schedule=lr_schedule, max_steps=max_steps, optimizer=optimizer)
        self.encoder = encoder
        self.n_way = int(n_way)
        self.encoder_lr = float(encoder_lr if encoder_lr is not None else outer_lr)
        # Frozen pretrained weights are reloaded from the encoder files, not stored per checkpoint.
        self.strict_loading = False
        self.val_acc = CatMetric()

    # -- the contract -----------------------------------------------------------------------
    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Adapts to the support set and predicts the query set.

        Returns:
            ``(loss, logits)``: the query loss (differentiable w.r.t. meta-parameters in
            training) and query logits ``(n_way * n_query, n_way)``.
        """
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------------------
    def embed_episode(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Support and query embeddings from one encoder call: ``(n_s, H), (n_q, H)``."""
        n_s = episode.support_y.shape[0]
        z = self.encoder(concat_inputs(episode.support_x, episode.query_x))
        return z[:n_s], z[n_s:]

    # -- Lightning hooks ----------------------------------------------------------------------
    def on_train_start(self) -> None:
        # Lightning >= 2.5 keeps whatever train/eval mode the modules had when fit started. The
        # encoder's trainable top is in eval mode after construction but in train mode after a
        # feature cache was just computed, so without this a run trained with dropout or without
        # it depending on whether the cache existed. Every run now trains with the top's dropout.
        self.train()

    def _accuracy(self, logits: Tensor, y: Tensor) -> Tensor:
        return multiclass_accuracy(logits.argmax(-1), y, num_classes=logits.shape[-1], average="micro")

    def _macro_f1(self, logits: Tensor, y: Tensor) -> Tensor:
        # Macro-F1 beside accuracy: ARSC query sets are 51-91% positive, where accuracy rewards
        # predicting the majority class.
        return multiclass_f1_score(logits.argmax(-1), y, num_classes=logits.shape[-1], average="macro")

    def train_episode(self, episode: Episode) -> tuple[Tensor, Tensor]:
        loss, logits = self.episode_forward(episode)
        return loss, self._accuracy(logits.detach(), episode.query_y)

    def validation_step(self, episode: Episode, batch_idx: int) -> None:
        loss, logits = self.episode_forward(episode)
        self.val_acc.update(self._accuracy(logits, episode.query_y).reshape(1))
        self.log("val/loss", loss, batch_size=1, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        accs = self.val_acc.compute().reshape(-1)  # gathered across ranks
        self.val_acc.reset()
        self.log("val/acc", accs.float().mean(), prog_bar=True, sync_dist=False, rank_zero_only=False)

    def predict_episode(self, episode: Episode) -> Tensor:
        """Query logits ``(n_way * n_query, n_way)`` after adapting to the support set."""
        return self.episode_forward(episode)[1]

    def test_record(self, episode: Episode, logits: Tensor, adapt_s: float) -> dict[str, Any]:
        return {
            "index": episode.index, "task": episode.task, "fingerprint": episode.fingerprint(),
            "acc": float(self._accuracy(logits, episode.query_y)), "f1": float(self._macro_f1(logits, episode.query_y)),
            "n_query": int(episode.query_y.numel()),
            "adapt_s": adapt_s, "classes": episode.classes,
            "query_idx": episode.query_idx.tolist(), "query_y": episode.query_y.tolist(),
            "pred": logits.argmax(-1).tolist(),
        }

    def summarize_test(self, records: Sequence[dict[str, Any]]) -> dict[str, float]:
        """``test/acc`` ± ``test/acc_ci95`` and ``test/f1`` ± ``test/f1_ci95`` (macro-F1) over episodes,
        ``test/episodes``, mean ``test/adapt_s``."""
        out: dict[str, float] = {}
        for key in ("acc", "f1"):
            mean, ci = mean_ci95([r[key] for r in records])
            out.update({f"test/{key}": mean, f"test/{key}_ci95": 0.0 if math.isnan(ci) else ci})
        out.update({"test/episodes": float(len(records)),
                    "test/adapt_s": float(sum(r["adapt_s"] for r in records) / max(len(records), 1))})
        return out

    # -- optimization -------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        enc = {id(p) for p in self.encoder.parameters()}
        enc_params = [p for p in self.encoder.parameters() if p.requires_grad]
        other = [p for p in self.parameters() if p.requires_grad and id(p) not in enc]
        groups = []
        if enc_params:
            groups.append({"params": enc_params, "lr": self.encoder_lr, "name": "encoder"})
        if other:
            groups.append({"params": other, "lr": self.outer_lr, "name": "head"})
        return groups

    # -- checkpoints --------------------------------------------------------------------------
    def _frozen_names(self) -> set[str]:
        """Names of the parameters this run does not train (every alias of a shared tensor)."""
        return {n for n, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        frozen = self._frozen_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        checkpoint["metarec"] = {
            "algorithm": type(self).__name__,
            "encoder": self.encoder.identity,
            "freeze": self.encoder.freeze.value,
            "frozen_params_omitted": len(frozen),
        }

        # Lightning restores model, optimizer, scheduler and loop progress; the RNG states (dropout,
        # head init of later episodes) are ours to restore for an exact resume.
        # Plain types only, so that checkpoints load with torch.load(weights_only=True).
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["metarec_rng"] = {
            "torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached)),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("metarec_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
            name, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        # strict_loading is off only for the omitted frozen weights: trainable ones must be there, and
        # no trained one may land on a weight this run freezes (its cached states come from the
        # pretrained weights). A mismatch is refused before any work wherever the checkpoint's trainable
        # layers can be told (metarec.checkpoint.recorded_trainable); this is the last guard for the rest.
        params = dict(self.named_parameters(remove_duplicate=False))
        saved = set(checkpoint["state_dict"])
        frozen_names = self._frozen_names()
        missing = sorted(n for n in params if n not in frozen_names and n not in saved)
        omits_frozen = "frozen_params_omitted" in (checkpoint.get("metarec") or {})  # a writer that kept them says nothing
        frozen = sorted(frozen_names & saved) if omits_frozen else []
        if missing or frozen:
            enc = self.encoder
            this = trainable_layers(enc.freeze.value, enc.top_k)
            names = missing or frozen
            n = len({id(params[name]) for name in names})  # a tensor shared under two names counts once
            if missing:
                what = (f"lacks {n} parameters of {type(self).__name__} that this run trains (e.g. {names[:3]}): it "
                        f"was written by another algorithm or with fewer trainable encoder layers")
            else:
                what = (f"holds trained weights of {n} parameters of {type(self).__name__} that this run freezes "
                        f"(e.g. {names[:3]}): it was written with more trainable encoder layers")
            raise CheckpointError(f"checkpoint {what} than this run (trainable={this!r}); pass the encoder.freeze "
                                  f"and encoder.top_k it was trained with")
