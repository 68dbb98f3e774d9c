"""Per-user rating metrics against hand-computed values."""

import math

import pytest
import torch

from metarec.recsys.metrics import user_metrics


def test_mae_rmse_ndcg_against_hand_computed_values():
    pred = torch.tensor([4.0, 2.0, 3.0])
    y = torch.tensor([5.0, 3.0, 1.0])
    m = user_metrics(pred, torch.zeros(3), y)
    assert m["mae"] == pytest.approx(4 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(2))
    # Ranked by prediction: gains 5, 1, 3 (linear gain = true rating); ideal order 5, 3, 1.
    assert m["ndcg@1"] == pytest.approx(1.0)
    dcg3 = 5 + 1 / math.log2(3) + 3 / math.log2(4)
    idcg3 = 5 + 3 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx(dcg3 / idcg3, abs=1e-6)
    wrong_first = user_metrics(torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3), y)
    assert wrong_first["ndcg@1"] == pytest.approx(1 / 5)  # top item has gain 1, the ideal 5


def test_ndcg_averages_tied_predictions():
    # All predictions tied (e.g. popularity on new items): every position gets the mean gain 3.
    m = user_metrics(torch.full((3,), 3.5), torch.zeros(3), torch.tensor([5.0, 3.0, 1.0]))
    assert m["ndcg@1"] == pytest.approx(3 / 5)


def test_auc_and_like_accuracy_against_hand_computed_values():
    y = torch.tensor([5.0, 4.0, 2.0, 1.0])          # likes (>= 4): 1, 1, 0, 0
    score = torch.tensor([0.1, 0.9, 0.5, -0.3])      # pairs (pos > neg): 0.1>-0.3, 0.9>0.5, 0.9>-0.3 → 3 of 4
    m = user_metrics(torch.zeros(4), score, y)
    assert m["auc"] == pytest.approx(0.75)
    assert m["like_acc"] == pytest.approx(0.75)      # predicted likes 1, 1, 1, 0


def test_auc_is_nan_for_a_one_class_query():
    m = user_metrics(torch.zeros(3), torch.tensor([0.1, 0.2, 0.3]), torch.tensor([5.0, 4.0, 4.0]))
    assert math.isnan(m["auc"])
    assert m["mae"] == pytest.approx(13 / 3)
