"""``import metarec`` drops gym's "unmaintained" notice and nothing else written to stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTICE = "Gym has been unmaintained"


def _stderr_of_import(pythonpath: list[Path], tmp_path: Path) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
    out = subprocess.run([sys.executable, "-c", "import metarec, gym"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_importing_metarec_prints_nothing_to_stderr(tmp_path):
    pytest.importorskip("gym_notices")
    err = _stderr_of_import([ROOT], tmp_path)
    assert NOTICE not in err
    assert err == ""


def test_other_stderr_output_of_the_gym_import_is_passed_on(tmp_path):
    pytest.importorskip("gym_notices")
    fake = tmp_path / "site" / "gym"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import sys, warnings\n"
        "from gym_notices.notices import notices\n"
        "__version__ = '0.26.2'\n"
        "print('gym: a line before', file=sys.stderr)\n"
        "print(notices[__version__], file=sys.stderr)\n"
        "warnings.warn('gym: a warning after', UserWarning)\n"
    )
    err = _stderr_of_import([tmp_path / "site", ROOT], tmp_path)
    assert NOTICE not in err
    assert "gym: a line before" in err and "gym: a warning after" in err
