"""benchmarks/head_ceiling.py end to end on a tiny ARSC development protocol: its `recipe` column is
the run's own `metarec test` result, its whole-file heads read every line of each task's .train file."""

import json

import pytest

from metarec.cli import main
from metarec.data.arsc import make_dev_split
from tests.integration.scripts import run_benchmark
from tests.integration.test_reliability import TINY
from tests.unit.data.test_arsc import make_arsc_dir


def _ceiling(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    return run_benchmark("head_ceiling.py", argv, monkeypatch)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.fixture()
def dev_run(tmp_path, monkeypatch):
    """A two-step multitask_prior fit on a tiny ARSC directory with 2 domains held out."""
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path / "cache"))
    root = make_arsc_dir(tmp_path / "arsc", filtered=("apparel", "baby", "beauty", "camera_photo"), targets=(),
                         thresholds=("t2", "t4"), sizes={"train": (8, 8), "dev": (6, 6), "test": (5, 7)})
    split = tmp_path / "dev.json"
    split.write_text(json.dumps(make_dev_split(root, n_domains=2, min_test=10, thresholds=("t2", "t4"), seed=0)))
    overrides = [*TINY, "family=arsc", f"family.data_dir={root}", f"family.dev_split={split}",
                 "family.thresholds=[t2,t4]", "algorithm=multitask_prior"]
    assert main(["fit", *overrides, f"run_dir={tmp_path / 'run'}"]) == 0
    return tmp_path / "run" / "checkpoints" / "last.ckpt", overrides, root


def test_recipe_column_is_the_runs_test_result_and_file_heads_read_the_whole_train_file(dev_run, monkeypatch, capsys):
    ckpt, overrides, root = dev_run
    capsys.readouterr()
    assert main(["test", str(ckpt), *overrides]) == 0
    alone = capsys.readouterr().out
    assert _ceiling([str(ckpt), "--", *overrides], monkeypatch) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = _cells(next(ln for ln in lines if ln.startswith("| task")))
    assert header[3:] == ["recipe", "recipe, from text", "file, pull 30", "file, pull 1", "file, pull 0.01"]
    tasks = [_cells(ln) for ln in lines if ln.startswith("| ") and "." in ln.split("|")[1] and "mean" not in ln]
    assert sorted(t[0] for t in tasks) == sorted(f"{d}.{t}" for d in json.loads((root.parent / "dev.json").read_text())
                                                 ["holdout_domains"] for t in ("t2", "t4"))
    for t in tasks:   # every line of the task's .train file, 8 negative + 8 positive
        assert int(t[2]) == 16
        assert all(0.0 <= float(v) <= 100.0 for v in t[3:])
    mean = _cells(next(ln for ln in lines if ln.startswith("| mean over tasks")))
    assert f"test accuracy {mean[3]}" in alone   # the recipe column is the run's own `metarec test` result


def test_refuses_a_missing_damaged_or_foreign_checkpoint_another_algorithm_or_protocol(dev_run, tmp_path, monkeypatch, capsys):
    ckpt, overrides, _ = dev_run
    assert _ceiling([str(tmp_path / "nope.ckpt"), "--", *overrides], monkeypatch) == 2
    assert f"checkpoint {tmp_path / 'nope.ckpt'} does not exist" in capsys.readouterr().err
    assert _ceiling([str(ckpt), "--", *overrides, "algorithm=protonet"], monkeypatch) == 2
    assert "the ceiling is of multitask_prior's test head" in capsys.readouterr().err
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(ckpt.read_bytes()[:1000])
    assert _ceiling([str(damaged), "--", *overrides], monkeypatch) == 2
    assert f"checkpoint {damaged} cannot be read" in capsys.readouterr().err
    assert _ceiling([str(ckpt), "--", *overrides, "episodes.n_way=3"], monkeypatch) == 2
    assert f"checkpoint {ckpt} belongs to another kind of run: n_way=2 (this run: 3)" in capsys.readouterr().err
    assert _ceiling([str(ckpt), "--", *overrides, "encoder.top_k=2"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "trainable='top_k=1' (this run: 'top_k=2')" in err and "Traceback" not in err
    other = [o for o in overrides if not o.startswith("family.dev_split=")]
    assert _ceiling([str(ckpt), "--", *other, "family.holdout_domains=[beauty,camera_photo]"], monkeypatch) == 2
    assert "runs the 'fallback' protocol; the whole-file heads need the development protocol" in capsys.readouterr().err
    assert _ceiling([str(ckpt), "--", *overrides, "encoder.bogus=1"], monkeypatch) == 2  # before any work
    err = capsys.readouterr().err
    assert "unknown config key encoder.bogus" in err and "Traceback" not in err
    assert _ceiling([str(ckpt), "--", *overrides, "+algorithm.prior_l3=1"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "algorithm.prior_l3" in err and "Traceback" not in err
