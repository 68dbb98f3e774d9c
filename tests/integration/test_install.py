"""A non-editable install (``pip install <checkout>``), used from a folder outside the checkout.

The package is built from a copy of the checkout (pip builds in the source tree: ``build/``,
``*.egg-info``) and installed with ``--target`` into a temporary folder that is put alone on
``PYTHONPATH``; every command runs from another temporary folder. So the configs, the console
script and a tiny fit are proven to work from the installed files only, never from this checkout
or the editable install of the development environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "metarec", src / "metarec", ignore=shutil.ignore_patterns("__pycache__"))
    if shutil.which("git"):
        # The install then sits inside an unrelated git repository, as a venv inside a project does.
        subprocess.run(["git", "init", "-q", str(tmp)], check=True)
    site = tmp / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--disable-pip-version-check", "-q", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    return {"site": site, "cwd": cwd, "cache": tmp / "cache"}


def _run(install: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAREC_")}
    env.update(PYTHONPATH=str(install["site"]), METAREC_CACHE_DIR=str(install["cache"]), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, *args], cwd=install["cwd"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_the_installed_package_is_imported_with_its_data_and_no_checkout(install):
    out = _run(install, "-c", "import hashlib, metarec, metarec.config as c, metarec.bench.store as s, "
                              "metarec.data.arsc_bundle as b; "
                              "print(metarec.__file__); print(c.config_dir()); print(s.source_checkout()); "
                              "a = b.bundle_dir() / b.ARCHIVE; print(a); "
                              "print(hashlib.sha256(a.read_bytes()).hexdigest() == b.read_manifest()['archive']['sha256'])")
    package, configs, checkout, archive, archive_ok = out.stdout.splitlines()
    assert Path(package).is_relative_to(install["site"]), f"imported {package}, not the install"
    assert Path(configs) == install["site"] / "metarec" / "configs"
    assert (Path(configs) / "splits").is_dir()
    assert checkout == "None"  # the surrounding git repository is not metarec's checkout
    assert Path(archive).is_relative_to(install["site"]) and archive_ok == "True"  # the bundled ARSC files ship


def test_metarec_list_runs_from_the_install(install):
    out = _run(install, str(install["site"] / "bin" / "metarec"), "list")
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert "protonet" in lines["algorithms"].split(", ")
    assert "tiny_bert" in lines["encoders"].split(", ")
    assert "quickstart/protonet" in lines["experiments"].split(", ")


@pytest.mark.slow
def test_a_tiny_fit_runs_from_the_install(install):
    out = _run(install, str(install["site"] / "bin" / "metarec"), "fit", "encoder=tiny_bert",
               "family=synthetic_sentiment", "episodes.n_way=2", "trainer.max_steps=2", "trainer.val_check_interval=2",
               "episodes.val_episodes=2", "episodes.test_episodes=2", "trainer.enable_progress_bar=false")
    assert "test accuracy" in out.stdout
    run_dir = install["cwd"] / "runs" / "protonet-synthetic_sentiment-2w5s-seed0"  # the default: runs/<name>
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
