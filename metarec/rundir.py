"""One run, one directory: a lock against concurrent writers, refusal of a used directory,
and a CSV logger that keeps every ``metrics.csv`` row across a resume.

A run directory holds ``checkpoints/`` (``last.ckpt``, ``best-<step>.ckpt``) and ``csv/metrics.csv``.
Fitting into a directory that already holds those is refused unless the fit resumes
(``resume_from=…``) or ``overwrite=true`` clears them first, so ``last.ckpt`` always names the
newest state of the one run the directory holds (Lightning would otherwise write
``last-v1.ckpt`` beside a stale ``last.ckpt``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Optional

from lightning.fabric.loggers.csv_logs import _ExperimentWriter as _FabricExperimentWriter
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig

from metarec.log import get_logger

log = get_logger(__name__)

LOCK_NAME = ".metarec.lock"
#: What metarec writes into a run directory for a fit (cleared by ``overwrite=true``).
RUN_OUTPUTS = ("checkpoints", "csv")


class RunDirError(ValueError):
    """A run directory that is in use by another process or holds another run."""


def is_rank_zero() -> bool:
    """True in the process that owns the run directory (rank 0, or no DDP at all)."""
    return (os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0") == "0"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunDirLock:
    """An exclusive lock file ``<run_dir>/.metarec.lock`` holding the owner's pid and host.

    A lock whose process is gone (same host, pid not alive) is stale: it is taken over with a
    warning. A lock from another host cannot be checked and is respected.

    Raises:
        RunDirError: on entering, if a live process holds the lock.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def _owner(self) -> Optional[dict[str, Any]]:
        try:
            owner = json.loads(self.path.read_text())
            return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner.get("host") != me["host"]:
                    raise RunDirError(f"run_dir {self.path.parent} is locked by process {owner['pid']} on host "
                                      f"{owner.get('host')} ({self.path}); if that run is over, delete the lock "
                                      "file") from None
                if owner is not None and owner["pid"] != me["pid"] and _pid_alive(owner["pid"]):
                    raise RunDirError(f"run_dir {self.path.parent} is in use by process {owner['pid']} (since "
                                      f"{owner.get('since')}, lock {self.path}); wait for it or choose another "
                                      "run_dir") from None
                what = f"dead process {owner['pid']}" if owner is not None else "an unreadable lock"
                log.warning("run_dir %s: removing a stale lock from %s (%s)", self.path.parent, what, self.path)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return
        raise RunDirError(f"run_dir {self.path.parent}: could not take the lock {self.path} (another process "
                          "keeps creating it)")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is None or owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunDirLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.release()


def check_run_dir(run_dir: Path, resume_from: Optional[str], overwrite: bool) -> None:
    """Refuses to fit into a directory that holds another run, or clears it under ``overwrite``.

    Args:
        run_dir: the run directory of a fit.
        resume_from: the checkpoint the fit resumes from, if any (then the directory's run
            continues and nothing is refused).
        overwrite: delete the previous run's ``checkpoints/`` and ``csv/`` instead of refusing.

    Raises:
        RunDirError: naming the directory, what it holds and the ways out.
    """
    if resume_from:
        return
    held = [run_dir / name for name in RUN_OUTPUTS if (run_dir / name).is_dir() and any((run_dir / name).iterdir())]
    if not held:
        return
    if not overwrite:
        ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) if (run_dir / "checkpoints").is_dir() else []
        what = f"checkpoints {', '.join(ckpts[:3])}" if ckpts else "the logs of an earlier run"
        raise RunDirError(f"run_dir {run_dir} already holds a run ({what}); resume it with resume_from="
                          f"{run_dir / 'checkpoints' / 'last.ckpt'}, replace it with overwrite=true, or choose "
                          "another run_dir")
    log.warning("overwrite=true: deleting the previous run's %s", ", ".join(str(p) for p in held))
    for p in held:
        shutil.rmtree(p)


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer without the deletion of an existing ``metrics.csv``: rows are appended."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            import csv

            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            # Known keys: a resumed run appending the same columns keeps the file as it is.
            self.metrics_keys = sorted(header)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that, when ``keep_rows``, appends to an existing ``metrics.csv`` (a resume)
    instead of deleting it; a new column rewrites the file with every old row kept."""

    def __init__(self, *args: Any, keep_rows: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_rows = keep_rows

    @property
    @rank_zero_experiment
    def experiment(self) -> _FabricExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer = _KeepingWriter if self.keep_rows else ExperimentWriter
            self._experiment = writer(log_dir=self.log_dir)
        return self._experiment
