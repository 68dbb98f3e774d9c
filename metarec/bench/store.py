"""The run store: one directory per cell, named by the hash of its resolved config.

    <store>/<hash>/config.yaml      resolved config
                   env.json         package versions, git commit, device
                   episodes.jsonl   per-episode accuracy, predictions, fingerprints
                   result.json      metrics, times, memory — written LAST, atomically
                   failed.json      instead of result.json: the error of a failed cell

A cell is finished iff ``result.json`` exists and parses (a truncated one is named in a warning
and the cell re-runs); a failed cell is not finished, so the next run retries it. Every file is written to a temporary name and
renamed, so a killed run never leaves a half-written result; an unfinished cell directory is
cleared and re-run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator, Optional

from metarec.files import atomic_write_text
from metarec.log import get_logger

__all__ = ["FAILED", "RESULT", "RunStore", "atomic_write_text", "environment"]

log = get_logger(__name__)

RESULT = "result.json"
FAILED = "failed.json"


def source_checkout() -> Optional[Path]:
    """The git checkout this metarec is imported from, or None for an installed package.

    An installed metarec (``pip install .``) can sit inside an unrelated git repository (a venv
    inside a project folder); that repository's commit says nothing about this code, so only a
    work tree whose top level holds this very ``metarec`` package counts.
    """
    package = Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(top) if top and (Path(top) / "metarec").resolve() == package else None


def environment() -> dict[str, Any]:
    """Package versions, git commit and device of this process."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    pkgs = {}
    for name in ("metarec", "torch", "transformers", "lightning", "learn2learn", "torchmetrics", "peft", "numpy"):
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            pkgs[name] = None
    repo = source_checkout()
    commit: Optional[str] = None
    dirty: Optional[bool] = None
    if repo is not None:
        try:
            commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10).stdout.strip() or None
            dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                        capture_output=True, text=True, timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            commit, dirty = None, None
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    device = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return {
        "packages": pkgs, "python": platform.python_version(), "git_commit": commit, "git_dirty": dirty,
        "device": device, "cuda": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
    }


class RunStore:
    """Directory of cell results (see module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def cell_dir(self, key: str) -> Path:
        return self.root / key

    def finished(self, key: str) -> bool:
        return self.load(key) is not None

    def prepare(self, key: str, force: bool = False) -> Path:
        """An empty directory for (re-)running a cell: leftovers of a killed run are cleared."""
        d = self.cell_dir(key)
        if d.exists() and (force or not self.finished(key)):
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def write(self, key: str, result: dict[str, Any], episodes: list[dict[str, Any]], config_yaml: str,
              env: dict[str, Any]) -> None:
        d = self.cell_dir(key)
        atomic_write_text(d / "config.yaml", config_yaml)
        atomic_write_text(d / "env.json", json.dumps(env, indent=2))
        atomic_write_text(d / "episodes.jsonl", "".join(json.dumps(e) + "\n" for e in episodes))
        atomic_write_text(d / RESULT, json.dumps(result, indent=2))  # last: marks the cell finished

    def load(self, key: str) -> Optional[dict[str, Any]]:
        """The cell's result record; ``None`` when it has none or an unreadable one (not finished)."""
        p = self.cell_dir(key) / RESULT
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
        except (ValueError, OSError) as e:
            log.warning("%s is truncated or not JSON (%s): the cell counts as not finished", p, e)
            return None
        if not isinstance(rec, dict) or "metrics" not in rec:
            log.warning("%s holds no result record (no 'metrics'): the cell counts as not finished", p)
            return None
        return rec

    def write_failure(self, key: str, cell: str, error: str, detail: str = "") -> None:
        """Records that the cell failed: its one-line error (and a traceback, for the curious)."""
        atomic_write_text(self.cell_dir(key) / FAILED, json.dumps({"cell": cell, "error": error}, indent=2))
        if detail:
            atomic_write_text(self.cell_dir(key) / "error.txt", detail)

    def failure(self, key: str) -> Optional[str]:
        """The error of a failed, unfinished cell, if one was recorded."""
        p = self.cell_dir(key) / FAILED
        if self.finished(key) or not p.is_file():
            return None
        try:
            return str(json.loads(p.read_text())["error"])
        except (ValueError, OSError, KeyError, TypeError):
            return f"failed (unreadable {p})"

    def episodes(self, key: str) -> list[dict[str, Any]]:
        p = self.cell_dir(key) / "episodes.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def keys(self) -> Iterator[str]:
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                if d.is_dir() and self.finished(d.name):
                    yield d.name
