"""The ctr_coldstart family end to end: every CTR method through the real configs on a tiny generated
log, and a bench suite whose report shows AUC / log-loss per warm-up phase, paired Δ and the plot."""

from __future__ import annotations

import csv as csvlib
import json
from pathlib import Path

import pytest

from metarec.bench.runner import run_suite
from metarec.config import compose, config_dir
from metarec.registry import CTR_METHODS
from metarec.training import run_experiment
from tests.unit.recsys.test_ctr import _write_log

TINY = ["family.k_shot=2", "family.min_query=1", "family.user_fields=[age]", "family.item_text_fields=[movie_title]",
        "encoder.name=tiny_bert", "algorithm.base_steps=3", "episodes.batch_size=8", "episodes.meta_batch_size=2"]


@pytest.mark.parametrize("option", ["trainer.max_steps=50", "trainer.val_check_interval=7",
                                    "trainer.early_stopping.patience=2", "trainer.weight_averaging_start=0.5",
                                    "trainer.checkpoint_every_n_steps=10", "trainer.keep_checkpoints=-1"])
def test_trainer_options_a_ctr_run_does_not_use_are_refused(option, tmp_path, capsys):
    """The CTR run trains for the method's own steps, unvalidated and uncheckpointed: these are errors."""
    from metarec.cli import main

    code = main(["fit", "experiment=ctr-ml100k/maml", f"family.data_dir={tmp_path / 'absent'}", *TINY, option,
                 f"run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    assert f"{option} is not used: the ctr_coldstart family trains CTR method 'ctr_maml'" in err[0]
    assert not (tmp_path / "run" / "filter_report.json").exists()


def test_every_ctr_method_has_a_config():
    for name in CTR_METHODS.list():
        assert (config_dir() / "algorithm" / f"{name}.yaml").is_file(), f"metarec/configs/algorithm/{name}.yaml missing"


@pytest.mark.parametrize("name", CTR_METHODS.list())
def test_every_ctr_method_fits_and_tests_per_item(name, tmp_path):
    log = _write_log(tmp_path / "log")
    cfg = compose([f"experiment=ctr-ml100k/{name[len('ctr_'):]}", f"family.data_dir={log}", *TINY,
                   f"run_dir={tmp_path / 'run'}"])
    res = run_experiment(cfg)
    assert [e["item"] for e in res.episodes] == ["5", "6"]
    for phase in ("cold", "a", "b", "c"):
        assert 0.0 <= res.metrics[f"test/auc_{phase}"] <= 1.0 and res.metrics[f"test/logloss_{phase}"] > 0
    assert res.trained == CTR_METHODS.get(name).trains
    rep = json.loads((tmp_path / "run" / "filter_report.json").read_text())
    assert rep["split"]["test_items"] == 2 and rep["read"]["interactions"] == 51


def test_bench_suite_reports_phases_paired_deltas_and_plot(tmp_path, capsys):
    log = _write_log(tmp_path / "log")
    suite = tmp_path / "ctr.yaml"
    over = json.dumps([f"family.data_dir={log}", *TINY])  # a YAML flow list of quoted overrides
    suite.write_text(f"""
name: ctr-tiny
reference: ctr_random
overrides: {over}
methods:
  ctr_popularity: [experiment=ctr-ml100k/popularity]
  ctr_random: [experiment=ctr-ml100k/random]
  ctr_meta_embedding: [experiment=ctr-ml100k/meta_embedding, algorithm.meta_steps=2]
families:
  tiny: []
shots: [0]
seeds: [0, 1]
""")
    code = run_suite(suite, store=tmp_path / "store", isolate=False)
    out, err = capsys.readouterr()
    assert code == 0, err  # a failed cell is recorded and the suite goes on: its exit status says so
    md = (tmp_path / "store" / "report.md").read_text()
    assert md in out
    for text in ("ctr_meta_embedding", "| c ", "ΔAUC vs ctr_random", "(p=", "Filtering", "2 test tasks"):
        assert text in md, text
    csv = (tmp_path / "store" / "report.csv").read_text().splitlines()
    assert len(csv) == 1 + 4 * 3  # 4 phases x 3 methods
    rows = list(csvlib.DictReader(csv))
    assert {r["seeds"] for r in rows} == {"2"}  # every row averages both seeds: none of them failed
    assert (tmp_path / "store" / "plots" / "auc-phases.png").is_file()
