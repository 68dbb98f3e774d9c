"""``scripts/bootstrap.sh`` stops before pip, with the numbers, when the disk cannot hold the venv."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bootstrap(**env: str) -> subprocess.CompletedProcess[str]:
    """Runs scripts/bootstrap.sh with ``env`` over this environment less its METAREC_* variables."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("METAREC_")}
    full.update(env)
    return subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh")], env=full, capture_output=True, text=True,
                          timeout=60)


def test_bootstrap_refuses_a_venv_the_disk_cannot_hold(tmp_path):
    venv = tmp_path / "missing" / "venv"
    out = _bootstrap(METAREC_VENV=str(venv), METAREC_MIN_FREE_GB="100000000")   # more than any disk has
    assert out.returncode == 1, out.stdout + out.stderr
    line = re.search(r"not enough disk for (\S+): (\d+) GB free on the filesystem of (\S+), about (\d+) GB needed",
                     out.stderr)
    assert line, out.stderr
    assert line.group(1) == str(venv)
    assert line.group(3) == str(tmp_path)          # the nearest folder that exists
    assert int(line.group(2)) < 100000000 and line.group(4) == "100000000"
    assert "METAREC_VENV" in out.stderr
    assert not (tmp_path / "missing").exists()     # nothing half-made


def test_bootstrap_passes_the_check_where_the_disk_has_room(tmp_path):
    # A zero threshold passes the check: the script goes on to create the venv (stopped by a missing
    # interpreter right after, so nothing is installed).
    out = _bootstrap(METAREC_VENV=str(tmp_path / "venv"), METAREC_MIN_FREE_GB="0",
                     PYTHON=str(tmp_path / "no-such-python"))
    assert out.returncode != 0
    assert "not enough disk" not in out.stderr
    assert "no-such-python" in out.stderr, out.stderr
