"""metarec: meta-learning benchmarks on e-commerce tasks, built on PyTorch Lightning."""

from __future__ import annotations

import contextlib
import io
import sys

__version__ = "0.1.0"


def _import_gym_quietly() -> None:
    # learn2learn imports gym, which prints an "unmaintained" notice to stderr on import;
    # metarec never uses gym, so the notice is noise for its users.
    if "gym" in sys.modules:
        return
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            import gym  # noqa: F401
        except ImportError:
            pass


_import_gym_quietly()
