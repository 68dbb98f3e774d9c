"""``trainer.early_stopping``: Lightning's EarlyStopping on val/acc stops the fit after `patience`
validations without a rise of more than `min_delta`, and the best checkpoint is still the one tested."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from metarec.config import compose
from metarec.training import build_trainer, run_experiment

BASE = ["encoder=tiny_bert", "algorithm=protonet", "episodes.n_way=3", "episodes.n_shot=2", "episodes.n_query=3",
        "episodes.meta_batch_size=2", "episodes.val_episodes=4", "episodes.test_episodes=4", "features.cache=false",
        "trainer.enable_progress_bar=false", "trainer.max_steps=12", "trainer.val_check_interval=2",
        "trainer.keep_checkpoints=-1"]


def _val_accs(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["val/acc"]) for r in csv.DictReader(f) if r.get("val/acc")}


def test_early_stopping_stops_and_tests_the_best_checkpoint(tmp_path):
    # min_delta=1.0: no validation after the first can count as an improvement, so with patience 2
    # the fit stops at the third validation (step 6 of 12).
    cfg = compose([*BASE, "trainer.early_stopping.patience=2", "trainer.early_stopping.min_delta=1.0",
                   f"run_dir={tmp_path}"])
    res = run_experiment(cfg)
    accs = _val_accs(tmp_path)
    assert sorted(accs) == [1, 3, 5]  # Lightning logs at the 0-based step index: validations after steps 2, 4, 6
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("val-*.ckpt"))
    assert ckpts == ["val-2.ckpt", "val-4.ckpt", "val-6.ckpt"]
    best_step = max(accs, key=lambda s: (accs[s], -s)) + 1
    assert Path(res.best_checkpoint).name == f"val-{best_step}.ckpt"
    # The fit's test is that checkpoint's: re-tested on the same episodes, it predicts as the fit's test did.
    again = run_experiment(cfg, run_dir=tmp_path / "retest", ckpt_path=res.best_checkpoint, fit=False)
    assert [e["pred"] for e in res.episodes] == [e["pred"] for e in again.episodes]
    assert res.metrics["test/acc"] == again.metrics["test/acc"]


def test_without_patience_the_fit_runs_every_step(tmp_path):
    cfg = compose([*BASE, "trainer.max_steps=4", f"run_dir={tmp_path}"])
    run_experiment(cfg)
    assert sorted(_val_accs(tmp_path)) == [1, 3]


def test_bad_early_stopping_values_are_named(tmp_path):
    cfg = compose([*BASE, "trainer.early_stopping.patience=0"])
    with pytest.raises(ValueError, match="trainer.early_stopping needs patience >= 1"):
        build_trainer(cfg, tmp_path)
