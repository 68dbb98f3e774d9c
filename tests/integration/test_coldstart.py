"""The cold-start rating family end to end: every recommender through the real configs on a tiny
fixture (both file formats), and a bench suite whose report shows metrics per state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metarec.bench.runner import run_suite
from metarec.config import compose, config_dir
from metarec.recsys.split import STATES
from metarec.registry import RECOMMENDERS
from metarec.training import run_experiment

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "coldstart"
TINY = ["family.split.cut=1000", "family.split.min_ratings=3", "family.split.n_query=2", "encoder.name=tiny_bert",
        "trainer.enable_progress_bar=false", "episodes.meta_batch_size=2"]


def test_every_recommender_has_a_config():
    for name in RECOMMENDERS.list():
        assert (config_dir() / "algorithm" / f"{name}.yaml").is_file(), f"metarec/configs/algorithm/{name}.yaml missing"


@pytest.mark.parametrize("name", RECOMMENDERS.list())
def test_every_recommender_fits_and_tests_per_user(name, tmp_path):
    fmt = "ml100k" if name == "popularity" else "recbole"  # both readers, end to end
    cfg = compose(["experiment=coldstart-ml100k/base", f"algorithm={name}", f"family.data_dir={FIX / fmt}",
                   "trainer.max_steps=3", *TINY, f"run_dir={tmp_path}"])
    res = run_experiment(cfg)
    assert len(res.episodes) == 16 and {e["state"] for e in res.episodes} == set(STATES)
    for state in STATES:
        assert res.metrics[f"test/{state}/users"] == 4
        assert 0 <= res.metrics[f"test/{state}/mae"] <= 4
    assert res.trained == RECOMMENDERS.get(name).trains
    assert json.loads((tmp_path / "filter_report.json").read_text())["split"]["train"]["users_kept"] == 4
    assert res.info["filter_report"]["read"]["interactions"] == 68


def test_fit_with_validation_users_logs_val_metrics_and_tests_the_best(tmp_path):
    cfg = compose(["experiment=coldstart-ml100k/base", "algorithm=melu_global", f"family.data_dir={FIX / 'recbole'}",
                   "trainer.max_steps=2", "trainer.val_check_interval=1", *TINY, "family.split.min_ratings=4",
                   "family.split.val_users=0.5", f"run_dir={tmp_path}"])
    res = run_experiment(cfg)
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    vals = [r.split(",")[header.index("val/acc")] for r in rows[1:]]
    assert {"val/acc", "val/mae", "val/loss"} <= set(header) and sum(v != "" for v in vals) == 2
    assert Path(res.best_checkpoint).name.startswith("best-")  # ModelCheckpoint on val/acc
    assert res.info["filter_report"]["split"]["val"]["users_kept"] == 2


def test_cli_prints_a_rating_run_per_state(tmp_path, capsys):
    from metarec.cli import main

    code = main(["fit", "experiment=coldstart-ml100k/popularity", f"family.data_dir={FIX / 'recbole'}", *TINY,
                 f"run_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| state " in out and "| new/new " in out and "16 test users" in out
    assert "test accuracy" not in out  # not printed as a classification run


def test_maml_local_update_changes_predictions_and_global_does_not(tmp_path):
    base = ["experiment=coldstart-ml100k/base", f"family.data_dir={FIX / 'recbole'}", "trainer.max_steps=2", *TINY]
    glob = run_experiment(compose([*base, "algorithm=melu_global", f"run_dir={tmp_path / 'g'}"]))
    fine = run_experiment(compose([*base, "algorithm=melu_finetune", "algorithm.eval_inner_steps=3",
                                   f"run_dir={tmp_path / 'f'}"]))
    assert glob.episode_set == fine.episode_set  # same users, same support/query: pairable
    # Same training (no local update in either), so predictions differ only by the per-user steps.
    assert [e["pred"] for e in glob.episodes] != [e["pred"] for e in fine.episodes]
    # ... and without them the fine-tuned model predicts exactly as the global one: the global model adapts nothing.
    none = run_experiment(compose([*base, "algorithm=melu_finetune", "algorithm.eval_inner_steps=0",
                                   f"run_dir={tmp_path / 'n'}"]))
    assert [e["pred"] for e in glob.episodes] == [e["pred"] for e in none.episodes]


def test_bench_suite_reports_metrics_per_state(tmp_path, capsys):
    suite = tmp_path / "cs.yaml"
    over = ", ".join([f"family.data_dir={FIX / 'recbole'}", *TINY, "trainer.max_steps=3"])
    suite.write_text(f"""
name: cs-tiny
reference: melu_global
overrides: [{over}]
methods:
  popularity: [experiment=coldstart-ml100k/popularity]
  melu_global: [experiment=coldstart-ml100k/global]
  melu_maml: [experiment=coldstart-ml100k/maml]
families:
  tiny: []
shots: [0]
seeds: [0]
reported:
  - {{method: MeLU (paper), state: new/new, metric: mae, value: 0.92, source: "Lee et al. 2019 Table 3, MovieLens-1M"}}
""")
    code = run_suite(suite, store=tmp_path / "store", isolate=False)
    out, err = capsys.readouterr()
    assert code == 0, err
    md = (tmp_path / "store" / "report.md").read_text()
    assert md in out
    for text in ("| new/new ", "melu_maml", "ΔMAE", "(p=", "Reported", "Filtering", "0.92"):
        assert text in md, text
    csv = (tmp_path / "store" / "report.csv").read_text().splitlines()
    assert len(csv) == 1 + 4 * 3  # 4 states x 3 methods


@pytest.mark.parametrize("cache", [True, False])
def test_item_features_honour_features_cache(cache, tmp_path, monkeypatch):
    """``features.cache=false`` embeds the item texts for this run only: no file in the cache directory."""
    from metarec.recsys.run import item_feature_table
    from metarec.runtime import build_family

    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path / "cache"))
    cfg = compose(["experiment=coldstart-ml100k/base", f"family.data_dir={FIX / 'recbole'}", *TINY,
                   f"features.cache={str(cache).lower()}", f"run_dir={tmp_path / 'run'}"])
    table = item_feature_table(cfg, build_family(cfg))
    written = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert bool(written) == cache, written
    again = item_feature_table(cfg, build_family(cfg))  # a cache hit (or a recomputation) gives the same table
    assert torch.equal(table.item_text, again.item_text) and table.item_text.abs().sum() > 0
