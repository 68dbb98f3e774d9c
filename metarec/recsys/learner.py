"""RatingLearner: the base class of recommenders of the cold-start family.

It adds to :class:`~metarec.learner.EpisodeLearner` (training step, timed test records, DDP
gather, optimizer — shared with the text algorithms) what every recommender shares: the loss (MSE
of the rating head + ``like_weight`` × BCE of the like head on ``rating >= like_threshold``), the
``train/mae`` log, ``val/*`` logs on validation users (when the split has them: ``val/acc`` like
accuracy, ``val/mae``, ``val/loss``, means over users, what EarlyStopping and ModelCheckpoint
monitor), and per-user test records with MAE, RMSE, nDCG@1/3 and AUC
(:func:`state_metrics`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch.nn.functional as F
from torch import Tensor

from metarec.evaluation.stats import mean_ci95
from metarec.learner import EpisodeLearner
from metarec.recsys.episode import RatingEpisode
from metarec.recsys.metrics import RATING_METRICS, user_metrics
from metarec.recsys.split import STATES


class RatingLearner(EpisodeLearner):
    """Base class of recommenders: ``task_forward(episode) -> (loss, rating, like_logit)``.

    Args:
        schema: input widths and vocabularies (:meth:`FeatureTable.schema`).
        train_stats: training-set statistics (:meth:`ColdStartFamily.train_stats`).
        like_threshold: ratings at or above it are likes.
        like_weight: weight of the like head's BCE in the loss.
        outer_lr, weight_decay, warmup_steps, lr_schedule, max_steps, optimizer: the optimizer
            (Adam by default) and its schedule, see :class:`~metarec.learner.EpisodeLearner`.
    """

    episode_type = RatingEpisode
    train_metric = "mae"

    def __init__(self, schema: dict[str, Any], train_stats: dict[str, Any], like_threshold: float = 4.0,
                 like_weight: float = 1.0, outer_lr: float = 1e-3, weight_decay: float = 0.0, warmup_steps: int = 0,
                 lr_schedule: str = "cosine", max_steps: int = 1000, optimizer: str = "adam") -> None:
        super().__init__(outer_lr=outer_lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                         lr_schedule=lr_schedule, max_steps=max_steps, optimizer=optimizer)
        self.schema = schema
        self.global_mean = float(train_stats["global_mean"])
        self.like_threshold = float(like_threshold)
        self.like_weight = float(like_weight)

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

    # -- EpisodeLearner ---------------------------------------------------------------------------
    def train_episode(self, ep: RatingEpisode) -> tuple[Tensor, Tensor]:
        loss, rating, _ = self.task_forward(ep)
        return loss, (rating.detach() - ep.query_y).abs().mean()

    def predict_episode(self, ep: RatingEpisode) -> tuple[Tensor, Tensor]:
        """Predicted ratings and like logits of the query, each ``(n_q,)``."""
        _, rating, like_logit = self.task_forward(ep)
        return rating, like_logit

    def validation_step(self, ep: RatingEpisode, batch_idx: int) -> None:
        loss, rating, like_logit = self.task_forward(ep)
        like = (ep.query_y >= self.like_threshold).float()
        # One value per user, averaged over users (and ranks) like the test metrics.
        self.log("val/loss", loss, batch_size=1, sync_dist=True)
        self.log("val/mae", (rating - ep.query_y).abs().mean(), batch_size=1, sync_dist=True)
        self.log("val/acc", ((like_logit > 0).float() == like).float().mean(), batch_size=1, sync_dist=True,
                 prog_bar=True)

    def test_record(self, ep: RatingEpisode, prediction: tuple[Tensor, Tensor], adapt_s: float) -> dict[str, Any]:
        rating, like_logit = prediction
        m = user_metrics(rating, like_logit, ep.query_y, self.like_threshold)
        return {
            "index": ep.index, "task": f"{ep.state}:{ep.user}", "state": ep.state, "user": ep.user,
            "fingerprint": ep.fingerprint(), "acc": m["like_acc"], **{k: m[k] for k in RATING_METRICS},
            "n_support": int(ep.support_y.numel()), "n_query": m["n_query"], "adapt_s": adapt_s,
            "query_items": ep.query_items.tolist(), "query_y": ep.query_y.tolist(),
            "pred": [round(float(v), 4) for v in rating], "like_logit": [round(float(v), 4) for v in like_logit],
        }

    def summarize_test(self, records: Sequence[dict[str, Any]]) -> dict[str, float]:
        return state_metrics(records)


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
