"""metarec: meta-learning benchmarks on e-commerce tasks, built on PyTorch Lightning."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import sys

__version__ = "0.1.0"

#: oneDNN primitive cache entries when the user has not chosen (docs/scaling-out.md, *Memory*).
ONEDNN_PRIMITIVE_CACHE_CAPACITY = 16


def _cap_onednn_primitive_cache() -> None:
    """Caps oneDNN's primitive cache unless ``$ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is already set.

    On a CPU, torch runs bf16 (and many fp32) matmuls through oneDNN, which keeps one compiled
    primitive, with its reordered weights and scratch buffers, per tensor shape, up to 1,024 by
    default. Length-bucketed batches have a new shape almost every step (each chunk is cut to its
    longest row), so over a long run the cache grows by gigabytes: 5.8 GB peak RSS for an ARSC
    recipe run that stays under 4 GB with 16 entries, at the same step time (docs/scaling-out.md,
    *Memory*). The value only decides which primitives are rebuilt, never a result. oneDNN reads
    the variable when it first builds a primitive, so it is set here, before any tensor work.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_PRIMITIVE_CACHE_CAPACITY))


_cap_onednn_primitive_cache()


def _gym_notice(version: str) -> str | None:
    """The text gym prints on import for ``version`` (from the ``gym_notices`` package), if any."""
    if importlib.util.find_spec("gym_notices") is None:
        return None  # gym prints nothing without it
    from gym_notices.notices import notices

    return notices.get(version)


def _import_gym_without_its_notice() -> None:
    """Imports gym with its one known stderr notice removed, passing on everything else.

    learn2learn imports gym (for its RL environments, which metarec never uses), and gym 0.26
    ``print``\\ s an "unmaintained since 2022" notice to stderr on import. It is not a warning, so
    a warnings filter cannot select it; instead stderr is captured during the import, exactly that
    notice is cut out and the rest (warnings, errors) is written back to stderr, also when the
    import fails.
    """
    if "gym" in sys.modules or importlib.util.find_spec("gym") is None:
        return
    captured = io.StringIO()
    notice = None
    try:
        with contextlib.redirect_stderr(captured):
            gym = importlib.import_module("gym")
        notice = _gym_notice(str(getattr(gym, "__version__", "")))
    finally:
        text = captured.getvalue()
        if notice:
            text = text.replace(notice + "\n", "", 1)
        if text:
            sys.stderr.write(text)


_import_gym_without_its_notice()
