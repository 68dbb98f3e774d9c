"""SIGTERM as an exception, so that a stopped run cleans up after itself.

Python's default SIGTERM ends the process where it stands; ``timeout``, ``kill`` and job
schedulers send it, and a state-cache build stopped that way left gigabytes of temporary files
and its run directory's lock. Within :func:`sigterm_unwinds`, SIGTERM raises :class:`Terminated`
in the main thread, so every ``finally`` runs: a cache being built removes its temporary
directory, a checkpoint being written is never renamed into place, the lock is released.

* One-shot: a second SIGTERM (schedulers and impatient users send several) is ignored, so it
  cannot break the unwinding of the first.
* A forked child that inherited the handler (a DataLoader worker) gets the default behaviour.
* Under DDP (``torch.distributed`` initialized, world size > 1) it does not raise: inside a
  Trainer, Lightning's own handler runs first and has broadcast the signal, and every rank
  raises Lightning's ``SIGTERMException`` at the same step, not in the middle of a collective;
  outside one, the process ends as by default (a rank cannot unwind alone).

Every ``metarec`` command runs through :func:`run_script`, as do the scripts of ``benchmarks/``
(``sys.exit(run_script(main))``) and ``metarec bench``'s cell workers. A parent waiting on a
child process passes the signal on with :func:`communicate` and waits for it to unwind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

#: Seconds a parent gives a child to unwind after passing SIGTERM on, before SIGKILL.
CHILD_GRACE_S = 120


class Terminated(BaseException):
    """SIGTERM, raised in the main thread. A ``BaseException``: no ``except Exception`` swallows it."""


def _ddp_running() -> bool:
    dist = sys.modules.get("torch.distributed")  # never imported here: a light module for light scripts
    return bool(dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block, the first SIGTERM raises :class:`Terminated` (the previous handler is
    restored after). Outside the main thread it does nothing (Python delivers signals there only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner, fired = os.getpid(), []

    def _raise(signum: int, frame: object) -> None:
        # A forked child that inherited this handler, or a DDP rank outside a Trainer (no Lightning
        # handler in front of this one): the default, as without this handler. A DDP rank inside a
        # Trainer: Lightning's handler has broadcast the signal and stops every rank at one step.
        if os.getpid() != owner or (_ddp_running() and signal.getsignal(signal.SIGTERM) is _raise):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if fired or _ddp_running():
            return
        fired.append(signum)
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped_by_sigterm(e: BaseException) -> bool:
    lightning = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return isinstance(e, Terminated) or (lightning is not None and isinstance(e, lightning.SIGTERMException))


def run_script(main_fn: Callable[[], Optional[int]], prog: Optional[str] = None) -> int:
    """Runs ``main_fn`` so that SIGTERM unwinds it: one line ``PROG: stopped by SIGTERM; …`` and
    143 (128 + 15); ``prog`` is the script's file name by default."""
    try:
        with sigterm_unwinds():
            return int(main_fn() or 0)
    except BaseException as e:
        if not _stopped_by_sigterm(e):
            raise
        print(f"{prog or Path(sys.argv[0]).name}: stopped by SIGTERM; unfinished files were removed", file=sys.stderr)
        return 128 + int(signal.SIGTERM)


def communicate(proc: subprocess.Popen, grace_s: float = CHILD_GRACE_S) -> tuple[Optional[str], Optional[str]]:
    """``proc.communicate()``; stopped by SIGTERM, it passes the signal on to ``proc`` and waits up
    to ``grace_s`` for it to unwind (then SIGKILL) before re-raising."""
    try:
        return proc.communicate()
    except Terminated:
        proc.terminate()
        try:
            proc.communicate(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
