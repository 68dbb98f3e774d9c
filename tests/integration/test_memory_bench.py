"""benchmarks/memory.py checks every mode's config before its first (minutes-long) run."""

import argparse
import runpy

from metarec.config import compose
from metarec.validate import validate_config
from tests.integration.scripts import BENCHMARKS, run_benchmark


def test_memory_refuses_a_chunked_mode_for_an_algorithm_without_it(monkeypatch, capsys):
    # protonet has no backward_chunks option: one line naming mode and option, no traceback, no run
    assert run_benchmark("memory.py", ["--modes", "ram,mmap+chunks", "--out", "unused",
                                       "experiment=quickstart/protonet"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "mode mmap+chunks with experiment=quickstart/protonet" in err
    assert "backward_chunks" in err
    assert "Traceback" not in err and "measuring" not in err


def test_every_mode_of_the_recipe_passes_the_check():
    memory = runpy.run_path(str(BENCHMARKS / "memory.py"))
    args = argparse.Namespace(overrides=memory["RECIPE"], steps=3, seed=0, chunk_buckets=8)
    recipe_buckets = compose(memory["RECIPE"]).encoder.length_buckets
    assert recipe_buckets != args.chunk_buckets  # so that the check below can tell them apart
    for mode in memory["MODES"]:
        cfg = memory["mode_config"](args, mode)
        validate_config(cfg)  # what main() checks before the first run
        assert cfg.features.memory == mode.partition("+")[0]
        assert bool(cfg.algorithm.backward_chunks) == mode.endswith("+chunks")
        assert cfg.encoder.length_buckets == (8 if mode.endswith("+chunks") else recipe_buckets)
