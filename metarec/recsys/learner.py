"""RatingLearner: the base class of recommenders of the cold-start family.

It holds what every recommender shares once: the loss (MSE of the rating head + ``like_weight`` ×
BCE of the like head on ``rating >= like_threshold``), optimizers and schedule, ``train/*`` logs,
and per-user test records with MAE, RMSE, nDCG@1/3 and AUC (:func:`state_metrics`).
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.algorithms.base import lr_factor
from metarec.evaluation.stats import mean_ci95
from metarec.recsys.episode import RatingEpisode
from metarec.recsys.metrics import RATING_METRICS, user_metrics
from metarec.recsys.split import STATES


class RatingLearner(L.LightningModule):
    """Base class of recommenders: ``task_forward(episode) -> (loss, rating, like_logit)``.

    Args:
        schema: input widths and vocabularies (:meth:`FeatureTable.schema`).
        train_stats: training-set statistics (:meth:`ColdStartFamily.train_stats`).
        like_threshold: ratings at or above it are likes.
        like_weight: weight of the like head's BCE in the loss.
        outer_lr, weight_decay, warmup_steps, lr_schedule, max_steps: the (Adam) optimizer.
    """

    trains: ClassVar[bool] = True

    def __init__(self, schema: dict[str, Any], train_stats: dict[str, Any], like_threshold: float = 4.0,
                 like_weight: float = 1.0, outer_lr: float = 1e-3, weight_decay: float = 0.0, warmup_steps: int = 0,
                 lr_schedule: str = "cosine", max_steps: int = 1000) -> None:
        super().__init__()
        if lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {lr_schedule!r}")
        self.schema = schema
        self.global_mean = float(train_stats["global_mean"])
        self.like_threshold = float(like_threshold)
        self.like_weight = float(like_weight)
        self.outer_lr, self.weight_decay = float(outer_lr), float(weight_decay)
        self.warmup_steps, self.lr_schedule, self.max_steps = int(warmup_steps), lr_schedule, int(max_steps)
        self.test_records: list[dict[str, Any]] = []

    # -- the contract -------------------------------------------------------------------------
    def task_forward(self, episode: RatingEpisode) -> tuple[Tensor, Tensor, Tensor]:
        """Adapts to the support ratings and predicts the query.

        Returns:
            ``(loss, rating, like_logit)``: query loss, predicted ratings ``(n_q,)`` and like
            logits ``(n_q,)``.
        """
        raise NotImplementedError

    def loss(self, rating: Tensor, like_logit: Tensor, y: Tensor) -> Tensor:
        like = (y >= self.like_threshold).float()
        return F.mse_loss(rating, y) + self.like_weight * F.binary_cross_entropy_with_logits(like_logit, like)

    # -- Lightning hooks ------------------------------------------------------------------------
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, RatingEpisode):
            return batch.to(device)
        if isinstance(batch, list):
            return [e.to(device) for e in batch]
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: list[RatingEpisode], batch_idx: int) -> Tensor:
        losses, maes = [], []
        for ep in batch:
            loss, rating, _ = self.task_forward(ep)
            losses.append(loss)
            maes.append((rating.detach() - ep.query_y).abs().mean())
        loss = torch.stack(losses).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/mae", torch.stack(maes).mean(), prog_bar=True, batch_size=len(batch))
        return loss

    def on_test_epoch_start(self) -> None:
        self.test_records = []

    def test_step(self, ep: RatingEpisode, batch_idx: int) -> None:
        t0 = time.perf_counter()
        _, rating, like_logit = self.task_forward(ep)
        adapt_s = time.perf_counter() - t0
        m = user_metrics(rating, like_logit, ep.query_y, self.like_threshold)
        self.test_records.append({
            "index": ep.index, "task": f"{ep.state}:{ep.user}", "state": ep.state, "user": ep.user,
            "fingerprint": ep.fingerprint(), "acc": m["like_acc"], **{k: m[k] for k in RATING_METRICS},
            "n_support": int(ep.support_y.numel()), "n_query": m["n_query"], "adapt_s": adapt_s,
            "query_items": ep.query_items.tolist(), "query_y": ep.query_y.tolist(),
            "pred": [round(float(v), 4) for v in rating], "like_logit": [round(float(v), 4) for v in like_logit],
        })

    def on_test_epoch_end(self) -> None:
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, self.test_records)
            self.test_records = sorted((r for part in gathered for r in part), key=lambda r: r["index"])
        for key, value in state_metrics(self.test_records).items():
            self.log(key, value, rank_zero_only=False)

    # -- optimization -----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError(f"{type(self).__name__} has no trainable parameters")
        opt = torch.optim.Adam(params, lr=self.outer_lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(self.warmup_steps, self.max_steps, self.lr_schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def state_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``test/<state>/<metric>`` and ``..._ci95`` means over users, plus ``test/acc`` (like accuracy).

    Users with an undefined AUC (one-class query) are left out of the AUC mean and counted in
    ``test/<state>/auc_users``.
    """
    out: dict[str, float] = {}
    if not records:
        return out
    mean, ci = mean_ci95([r["acc"] for r in records])
    out.update({"test/acc": mean, "test/acc_ci95": 0.0 if math.isnan(ci) else ci, "test/episodes": float(len(records))})
    for state in STATES:
        rs = [r for r in records if r["state"] == state]
        out[f"test/{state}/users"] = float(len(rs))
        for k in RATING_METRICS:
            vals = [r[k] for r in rs if r[k] is not None and not math.isnan(r[k])]
            if k == "auc":
                out[f"test/{state}/auc_users"] = float(len(vals))
            if vals:
                mean, ci = mean_ci95(vals)
                out[f"test/{state}/{k}"] = mean
                out[f"test/{state}/{k}_ci95"] = ci
    return out
