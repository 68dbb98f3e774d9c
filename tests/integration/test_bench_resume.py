"""A suite killed mid-run resumes: finished cells are skipped, the killed cell re-runs."""

import os

import pytest

import metarec.training
from metarec.bench.runner import run_suite
from metarec.bench.store import RunStore

SUITE = """
name: tiny
synthetic: true
reference: nearest_prototype
overrides: [encoder=tiny_bert, family=synthetic_sentiment, episodes.n_way=2, trainer.max_steps=2,
            trainer.val_check_interval=2, episodes.val_episodes=2, episodes.test_episodes=4,
            trainer.enable_progress_bar=false]
methods:
  nearest_prototype: [algorithm=nearest_prototype, encoder.freeze=frozen]
  protonet: [algorithm=protonet]
  anil: [algorithm=anil]
families:
  sentiment: []
shots: [2]
seeds: [0]
"""


def test_killed_suite_resumes_only_missing_cells(tmp_path, monkeypatch, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    store = tmp_path / "store"
    real = metarec.training.run_experiment
    calls: list[str] = []

    def killed_on_second(cfg, **kw):
        calls.append(cfg.algorithm.name)
        if len(calls) == 2:
            (kw["run_dir"] / "episodes.jsonl").write_text("partial")  # half-done work of the killed cell
            raise KeyboardInterrupt
        return real(cfg, **kw)

    monkeypatch.setattr(metarec.training, "run_experiment", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, store=store, isolate=False)
    rs = RunStore(store)
    assert len(list(rs.keys())) == 1
    first_key = next(rs.keys())
    first_mtime = (store / first_key / "result.json").stat().st_mtime_ns

    calls.clear()
    monkeypatch.setattr(metarec.training, "run_experiment", lambda cfg, **kw: (calls.append(cfg.algorithm.name), real(cfg, **kw))[1])
    assert run_suite(suite, store=store, isolate=False) == 0
    assert calls == ["protonet", "anil"]  # the finished cell was not re-run
    assert (store / first_key / "result.json").stat().st_mtime_ns == first_mtime
    assert len(list(rs.keys())) == 3
    out = capsys.readouterr().out
    assert "synthetic" in out and "nearest_prototype" in out and "anil" in out

    calls.clear()
    assert run_suite(suite, store=store, isolate=False) == 0
    assert calls == []  # everything finished: nothing re-runs
    assert run_suite(suite, store=store, force=True, only="anil", isolate=False) == 0
    assert calls == ["anil"]


def test_cells_run_in_their_own_process(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE.replace("  protonet: [algorithm=protonet]\n  anil: [algorithm=anil]\n", ""))
    assert run_suite(suite, store=tmp_path / "store") == 0
    rs = RunStore(tmp_path / "store")
    (key,) = list(rs.keys())
    rec = rs.load(key)
    assert rec["pid"] != os.getpid()  # the record was written by another process, the cell's worker
    assert rec["peak_rss_mb"] > 0 and rec["n_episodes"] == 4
    assert "nearest_prototype" in capsys.readouterr().out
    assert run_suite(suite, store=tmp_path / "store2", isolate=False) == 0
    (key2,) = list(RunStore(tmp_path / "store2").keys())
    assert RunStore(tmp_path / "store2").load(key2)["pid"] == os.getpid()  # the check tells the two apart


def test_a_suite_redirected_to_a_file_logs_cell_progress_and_results(tmp_path):
    """Workers log their progress lines (tagged with the cell) and the runner's result line reaches
    the file as the cell ends, not when the suite's stdout buffer happens to flush."""
    import os
    import subprocess
    import sys

    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE.replace("  nearest_prototype: [algorithm=nearest_prototype, encoder.freeze=frozen]\n", "")
                     .replace("reference: nearest_prototype", "reference: protonet")
                     .replace("  anil: [algorithm=anil]\n", ""))
    log = tmp_path / "suite.log"
    env = {**os.environ, "METAREC_PROGRESS_SECONDS": "0"}
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "metarec.cli", "bench", str(suite), "--store", str(tmp_path / "store")],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
        assert proc.wait(timeout=600) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert "[protonet/sentiment/2shot/seed0] metarec.progress: fit:" in text, text[-2000:]
    assert "[protonet/sentiment/2shot/seed0] metarec.progress: test:" in text
    # the per-cell result line comes before the final report (flushed when the cell ended)
    assert text.index("[tiny] protonet/sentiment/2shot/seed0: acc") < text.index("## tiny")
