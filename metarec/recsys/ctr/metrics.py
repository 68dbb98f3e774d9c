"""AUC and log-loss of click predictions, with 95% confidence intervals over items.

As in Meta-Embedding (and CTR papers generally) AUC and log-loss are computed over **all** query
impressions of the test items pooled (per phase): an item's ID embedding mostly moves the item's
level against other items, which a per-item AUC would not see. Uncertainty over items is a
**cluster bootstrap**: items are resampled with replacement (every resample keeps all of an item's
query rows), the metric is recomputed, and the 2.5/97.5 percentiles are the interval. Paired
differences resample the same items for both methods.

* AUC: torchmetrics ``binary_auroc``; inside the bootstrap the same Mann–Whitney statistic is
  computed for many item weightings at once (:func:`weighted_auc`, ties count half, checked
  against torchmetrics in the tests).
* Log-loss: mean binary cross-entropy of the probabilities (torch; torchmetrics has no log-loss),
  probabilities clipped to ``[1e-7, 1 - 1e-7]``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc

EPS = 1e-7


def auc(prob: np.ndarray, click: np.ndarray) -> float:
    """ROC AUC of probabilities ``(n,)`` against 0/1 clicks ``(n,)`` (``nan`` with one class)."""
    y = torch.as_tensor(click).long()
    if int(y.sum()) in (0, y.numel()):
        return float("nan")
    return float(binary_auroc(torch.as_tensor(prob, dtype=torch.float64), y))


def log_loss(prob: np.ndarray, click: np.ndarray) -> float:
    """Mean binary cross-entropy (natural log) of probabilities ``(n,)`` against clicks ``(n,)``."""
    p = torch.as_tensor(prob, dtype=torch.float64).clamp(EPS, 1 - EPS)
    return float(F.binary_cross_entropy(p, torch.as_tensor(click, dtype=torch.float64)))


def weighted_auc(prob: np.ndarray, click: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of every row of ``weights`` (Mann–Whitney with row weights; ties count half).

    Args:
        prob: scores ``(n,)``.
        click: 0/1 labels ``(n,)``.
        weights: ``(r, n)`` non-negative weight of every row in each of ``r`` weightings.

    Returns:
        ``(r,)`` AUCs (``nan`` where a weighting has no positive or no negative weight).
    """
    order = np.argsort(prob, kind="stable")
    s, y, w = prob[order], click[order].astype(bool), weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # tie groups of equal scores
    wp = np.add.reduceat(np.where(y, w, 0.0), starts, axis=1)
    wn = np.add.reduceat(np.where(y, 0.0, w), starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn  # negative weight with a strictly lower score
    num = (wp * (below + 0.5 * wn)).sum(1)
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_log_loss(prob: np.ndarray, click: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Log-loss of every row of ``weights`` ``(r, n)``: ``(r,)``."""
    p = np.clip(prob, EPS, 1 - EPS)
    ll = -(click * np.log(p) + (1 - click) * np.log(1 - p))
    return (weights @ ll) / weights.sum(1)


def item_resamples(n_items: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``(n_boot, n_items)`` multiplicity of every item in each bootstrap resample of the items."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(n_items, size=(n_boot, n_items))
    return np.stack([np.bincount(d, minlength=n_items) for d in draws]).astype(np.float64)
