"""The architecture contracts in pyproject.toml ([tool.importlinter]) hold, checked by import-linter.

Layers: a module imports only from layers below its own; no import cycle between sibling modules
at any depth. Function-level imports count, so a circle cannot hide inside a function.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
        "--config", str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo"]


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports puts the working directory first on sys.path: the metarec under `cwd` is checked.
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=str(cwd))
    return subprocess.run(LINT, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    out = _lint(ROOT)
    if out.returncode != 0:
        pytest.fail(f"import-linter (pyproject.toml [tool.importlinter]) found broken contracts:\n{out.stdout}{out.stderr}")
    assert "0 broken" in out.stdout


def test_a_lower_layer_importing_a_higher_one_inside_a_function_breaks_both_contracts(tmp_path):
    shutil.copytree(ROOT / "metarec", tmp_path / "metarec", ignore=shutil.ignore_patterns("__pycache__", "configs"))
    with open(tmp_path / "metarec" / "episode.py", "a") as f:
        f.write("\n\ndef _circle():\n    from metarec.training import run_experiment  # noqa: F401\n")
    out = _lint(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Contracts: 0 kept, 2 broken." in out.stdout
    assert "metarec.episode is not allowed to import metarec.training" in out.stdout
    assert "No cycles are allowed in metarec." in out.stdout
