"""The base shared by text algorithms and recommenders (metarec/learner.py)."""

from types import SimpleNamespace

import pytest

from metarec.learner import gather_records, lr_factor


def test_records_come_back_sorted_and_duplicates_are_an_error():
    one_rank = SimpleNamespace(world_size=1)
    records = [{"index": 2, "acc": 0.5}, {"index": 0, "acc": 1.0}, {"index": 1, "acc": 0.0}]
    assert [r["index"] for r in gather_records(one_rank, records)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match=r"duplicated test episodes across ranks: \[0, 1, 1\]"):
        gather_records(one_rank, [{"index": 1}, {"index": 0}, {"index": 1}])


def test_lr_factor_warms_up_then_decays_to_zero():
    f = lr_factor(warmup_steps=2, max_steps=10, schedule="cosine")
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.0) and 0 < f(6) < 1
    assert lr_factor(0, 10, "constant")(9) == 1.0
