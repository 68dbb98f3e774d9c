"""`metarec tune`: equal-budget studies that resume after kill -9 without losing or repeating a
finished trial, never touch the test split while tuning, and test the winner once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from metarec.bench.tune import run_tune
from metarec.data.family import TaskFamily
from metarec.data.synthetic import synthetic_category
from metarec.registry import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
COMMON = ("[encoder=tiny_bert, episodes.n_way=3, episodes.n_shot=2, episodes.n_query=3, episodes.val_episodes=4, "
          "episodes.test_episodes=4, episodes.meta_batch_size=2, features.cache=false, trainer.enable_progress_bar=false]")


def _suite(tmp_path: Path, family: str, trials: int, methods: str = "protonet: [algorithm=protonet]",
           max_steps: int = 4) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(f"name: t\nsynthetic: true\noverrides: {COMMON}\nmethods:\n  {methods}\n"
                 f"families:\n  cat: [family={family}]\nshots: [2]\nseeds: [0]\n"
                 f"tune: {{trials: {trials}, max_steps: {max_steps}, val_check_interval: {max_steps // 2}, "
                 "startup_trials: 2}\n")
    return p


def _trials(store: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="t/protonet/cat/2shot", storage=f"sqlite:///{store / 'tune.db'}").trials


def test_kill_9_then_rerun_resumes_to_the_budget_without_repeating_a_trial(tmp_path):
    # Trials long enough (a few seconds each on a quiet machine) to be caught running: with 4 steps
    # a trial took ~1 s and the whole study could end between two polls.
    suite, store = _suite(tmp_path, "synthetic_category", trials=2, max_steps=200), tmp_path / "store"
    cmd = [sys.executable, "-m", "metarec.cli", "tune", str(suite), "--store", str(store), "--no-test"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # kill while a trial runs, after at least one finished
            time.sleep(0.1)
            if proc.poll() is not None:
                pytest.fail(f"the tune run ended (exit {proc.returncode}) before it could be killed mid-trial")
            if not (store / "tune.db").exists():
                continue
            try:
                trials = _trials(store)
            except KeyError:  # the study is not created yet
                continue
            states = [t.state for t in trials]
            # The running trial must have its parameters already: killed between Optuna's ask and its
            # suggestions it has none, and its retry has nothing to repeat (a race seen once).
            if TrialState.COMPLETE in states and states[-1] == TrialState.RUNNING and trials[-1].params:
                break
        else:
            pytest.fail("the tune run never had a finished and a running trial")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _trials(store)
    finished = {t.number: (t.params, t.datetime_complete) for t in before if t.state == TrialState.COMPLETE}
    killed = [t for t in before if t.state == TrialState.RUNNING]
    assert finished and len(killed) == 1

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = _trials(store)
    done = [t for t in after if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 2  # the budget, not more
    for number, (params, completed) in finished.items():  # finished trials kept, never run again
        assert (after[number].params, after[number].datetime_complete) == (params, completed)
        assert f"trial {number}:" not in rerun.stderr
    assert after[killed[0].number].state == TrialState.FAIL
    retry = [t for t in after if t.user_attrs.get("retry_of") == killed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == killed[0].params
    # No sampled configuration ran twice either: the sampler is seeded per trial number.
    params = [json.dumps(t.params, sort_keys=True) for t in done]
    assert len(set(params)) == len(params)
    # Trial 0 is the config's own defaults.
    assert after[0].params == {"algorithm.outer_lr": 1e-3, "algorithm.encoder_lr": 5e-5, "algorithm.metric": "euclidean"}


class SplitTouched(RuntimeError):
    pass


class _GuardedSplits(dict):
    def __getitem__(self, split: str):  # noqa: ANN204
        if split == "test":
            raise SplitTouched("the test split was read during tuning")
        return super().__getitem__(split)


@FAMILIES.register("test_split_guard")
def _guarded(**kw) -> TaskFamily:  # noqa: ANN003
    family = synthetic_category(**kw)
    family.splits = _GuardedSplits(family.splits)
    return family


def test_tuning_never_reads_the_test_split(tmp_path):
    suite, store = _suite(tmp_path, "synthetic_category family.name=test_split_guard", trials=1,
                          methods="protonet: [algorithm=protonet]\n  linear_probe: [algorithm=linear_probe]"), tmp_path / "s"
    suite.write_text(suite.read_text().replace("family=synthetic_category family.name=test_split_guard",
                                               "family=synthetic_category, family.name=test_split_guard"))
    md, rows = run_tune(suite, store=store, test=False)  # both studies run to the budget: no test access
    assert [r["finished"] for r in rows] == [1, 1]
    assert "test_acc" not in rows[0]["winner"]
    with pytest.raises(SplitTouched):  # the guard is live: testing the winner does read the split
        run_tune(suite, store=store, test=True)


def test_winner_is_tested_once_and_reported(tmp_path):
    suite, store = _suite(tmp_path, "synthetic_category", trials=2), tmp_path / "s"
    md, rows = run_tune(suite, store=store)
    (row,) = rows
    assert row["budget"] == {"trials": 2, "max_steps": 4, "val_check_interval": 2}
    assert row["winner"]["val_acc"] == max(t.value for t in _trials(store))
    # every validation's val/acc reached Optuna (the pruner's input): 4 steps, one every 2
    assert all(sorted(t.intermediate_values) == [2, 4] for t in _trials(store))
    assert all(t.value == max(t.intermediate_values.values()) for t in _trials(store))  # the best checkpoint's
    assert 0.0 <= row["winner"]["test_acc"] <= 1.0 and "delta" in row
    result = store / "protonet" / "cat" / "2shot" / "test-winner" / "result.json"
    stamp = result.stat().st_mtime_ns
    md2, rows2 = run_tune(suite, store=store)  # finished: nothing re-run or re-tested
    assert result.stat().st_mtime_ns == stamp and rows2 == rows
    assert "| protonet | cat | 2 | 2 (0) |" in md
    assert (store / "plots" / "protonet-cat-2shot-history.png").stat().st_size > 0
    assert (store / "plots" / "protonet-cat-2shot-importance.png").stat().st_size > 0


def test_trials_see_a_family_whose_test_split_is_sealed(tmp_path):
    from metarec.bench.suite import load_suite
    from metarec.bench.tune import SealedSplitError, TuneSpec, plan_studies

    suite = load_suite(_suite(tmp_path, "synthetic_category", trials=2))
    (study,) = plan_studies(suite, TuneSpec.from_suite(suite), tmp_path / "s")
    from metarec.config import compose

    family = study.family(compose(study.overrides))
    assert family.tasks("val") and family.tasks("train")
    with pytest.raises(SealedSplitError, match="the test split was asked for during tuning"):
        family.tasks("test")
    assert study.family(compose(study.overrides)) is family  # built once per study
