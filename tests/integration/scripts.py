"""Runs a script of benchmarks/ in this process, as `python benchmarks/<name> ARGS` would."""

import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_benchmark(name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Exit status of ``benchmarks/<name>`` run with ``argv`` (its output goes to capsys)."""
    script = BENCHMARKS / name
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    return int(done.value.code or 0)
