"""The architecture holds: import-linter's contracts in pyproject.toml, and no private name shared.

Contracts ([tool.importlinter]): a module imports only from layers below its own; no import cycle
between sibling modules at any depth. Function-level imports count, so a circle cannot hide
inside a function. Beside them: no module imports another metarec module's ``_private`` name.
"""

from __future__ import annotations

import ast
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
    assert "metarec layers: a module imports only from layers below its own BROKEN" in out.stdout
    assert "no import cycles between sibling modules, at any depth BROKEN" in out.stdout
    assert "metarec.episode is not allowed to import metarec.training" in out.stdout
    assert "No cycles are allowed in metarec." in out.stdout


def _private_imports(package: Path) -> list[str]:
    """``path:line: from metarec.x import _name`` for every import of a private metarec name, at any depth."""
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in sorted(ast.walk(tree), key=lambda n: getattr(n, "lineno", 0)):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "metarec"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    source = "." * node.level + (node.module or "")
                    found.append(f"{path.relative_to(package.parent)}:{node.lineno}: from {source} import "
                                 f"{', '.join(private)}")
    return found


def test_no_private_name_crosses_a_module_boundary():
    # A name a module keeps private (leading underscore) is its own; a second module needing it
    # means it belongs in a shared module under a public name.
    found = _private_imports(ROOT / "metarec")
    assert not found, "private names imported from another metarec module:\n" + "\n".join(found)


def test_the_private_import_check_sees_a_function_level_import(tmp_path):
    (tmp_path / "metarec").mkdir()
    (tmp_path / "metarec" / "a.py").write_text("def f():\n    from metarec.b import _helper, public\n"
                                               "from .c import _other\n")
    assert _private_imports(tmp_path / "metarec") == ["metarec/a.py:2: from metarec.b import _helper",
                                                      "metarec/a.py:3: from .c import _other"]
