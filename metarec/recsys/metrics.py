"""Per-user metrics of a rating task (torchmetrics): MAE, RMSE, nDCG@k of the query ranking, AUC.

Every metric is computed per user (one query set) and then averaged over users with a 95% CI
(:func:`metarec.evaluation.stats.mean_ci95`), as in MeLU.

* nDCG@k ranks the query items by predicted rating; the gain of an item is its true rating
  (linear gain, torchmetrics' ``retrieval_normalized_dcg``; tied predictions share the average
  gain of their tie group, as scikit-learn's ``ndcg_score``). Ratings are passed as integers
  ``round(2 * rating)``, which leaves nDCG unchanged (it is invariant to scaling the gains) and
  keeps half-star ratings exact.
* AUC of the like head (label ``rating >= like_threshold``) is undefined for a user whose query
  holds one class only: it is ``nan`` for that user, who is left out of the AUC mean and counted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional import mean_absolute_error, mean_squared_error
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.retrieval import retrieval_normalized_dcg

from metarec.evaluation.stats import mean_ci95
from metarec.evaluation.tables import markdown_table

NDCG_KS = (1, 3)


def user_metrics(pred: Tensor, like_score: Tensor, y: Tensor, like_threshold: float = 4.0) -> dict[str, float]:
    """Metrics of one user's query set.

    Args:
        pred: predicted ratings ``(n_q,)``.
        like_score: like-head scores ``(n_q,)`` (logits or probabilities: AUC only needs the order).
        y: true ratings ``(n_q,)``.
        like_threshold: ratings at or above it are likes.

    Returns:
        ``mae``, ``rmse``, ``ndcg@1``, ``ndcg@3``, ``auc`` (``nan`` when the query has one class),
        ``like_acc`` (like predicted iff ``like_score`` is a positive logit) and ``n_query``.
    """
    pred, like_score, y = pred.detach().float().cpu(), like_score.detach().float().cpu(), y.detach().float().cpu()
    out = {"mae": float(mean_absolute_error(pred, y)), "rmse": float(mean_squared_error(pred, y, squared=False))}
    gains = torch.round(2 * y).long()
    for k in NDCG_KS:
        out[f"ndcg@{k}"] = float(retrieval_normalized_dcg(pred, gains, top_k=k))
    like = (y >= like_threshold).long()
    out["auc"] = float(binary_auroc(like_score.sigmoid(), like)) if 0 < int(like.sum()) < like.numel() else math.nan
    out["like_acc"] = float(((like_score > 0).long() == like).float().mean())
    out["n_query"] = int(y.numel())
    return out


RATING_METRICS = ("mae", "rmse", "ndcg@1", "ndcg@3", "auc")


def state_table(records: list[dict]) -> str:
    """Markdown table of one run's per-user records: per state, each metric's mean ± 95% CI over users."""
    rows = []
    for state in dict.fromkeys(r["state"] for r in records):
        rs = [r for r in records if r["state"] == state]
        cells: list[object] = [state, len(rs)]
        for k in RATING_METRICS:
            vals = [r[k] for r in rs if r[k] is not None and not math.isnan(r[k])]
            if not vals:
                cells.append("—")
                continue
            m, ci = mean_ci95(vals)
            cells.append(f"{m:.3f}" if math.isnan(ci) else f"{m:.3f} ± {ci:.3f}")
        rows.append(cells)
    return markdown_table(["state", "users", "MAE", "RMSE", "nDCG@1", "nDCG@3", "AUC"], rows)
