"""CSV logs always; Weights & Biases offline (no network) when configured, suite/cell as group/name;
progress lines for fit, validation and test in the log when stderr is not a terminal."""

import csv
import logging

from metarec.config import compose
from metarec.training import run_experiment


def test_csv_and_offline_wandb(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("METAREC_PROGRESS_SECONDS", "0")  # a line per step (pytest's stderr is not a TTY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose(["encoder=tiny_bert", "family=synthetic_sentiment", "episodes.n_way=2", "trainer.max_steps=2",
                   "trainer.val_check_interval=2", "episodes.val_episodes=2", "episodes.test_episodes=2",
                   "trainer.enable_progress_bar=false", "logger=wandb", "logger.group=suite-x",
                   "logger.run_name=cell-y", f"run_dir={tmp_path}"])
    with caplog.at_level(logging.INFO, logger="metarec.progress"):
        run_experiment(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "metarec.progress"]
    assert any(x.startswith("fit: 1/2 steps (50%)") and "ETA" in x for x in lines)
    assert any(x.startswith("fit: 2/2 steps (100%)") and x.endswith("(done)") for x in lines)
    assert any(x.startswith("validation: 2/2 episodes") for x in lines)
    assert any(x.startswith("test: 2/2 episodes (100%)") and x.endswith("(done)") for x in lines)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    assert any(r.get("val/acc") for r in rows) and any(r.get("test/acc") for r in rows)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, f"no offline W&B run under {tmp_path / 'wandb'}"
