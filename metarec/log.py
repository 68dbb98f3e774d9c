"""Library logging: one logger per module, messages from rank 0 only under DDP.

:class:`Progress` puts the progress of a long phase (cache build, fit, test) into the log at a
steady interval when stderr is not a terminal: tqdm bars are off then, and a run redirected to a
file would otherwise be silent for tens of minutes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from typing import Optional


class _RankZeroFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0"
        return rank == "0" or record.levelno >= logging.ERROR


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RankZeroFilter) for f in logger.filters):
        logger.addFilter(_RankZeroFilter())
    return logger


def progress_interval() -> float:
    """Seconds between progress lines: ``$METAREC_PROGRESS_SECONDS``, default 30."""
    raw = os.environ.get("METAREC_PROGRESS_SECONDS", "30")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"METAREC_PROGRESS_SECONDS must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"METAREC_PROGRESS_SECONDS must be >= 0, got {raw!r}")
    return value


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def peak_rss_bytes() -> int:
    """This process's peak resident set so far, in bytes: the kernel's ``ru_maxrss`` (KiB on Linux,
    bytes on macOS), the figure ``/usr/bin/time -v`` reports."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def memory_note() -> str:
    """``", RSS 2.91 GB (peak 3.12 GB)"``: this process's resident memory now and its high-water mark.

    The current figure is read from ``/proc/self/statm`` (Linux; left out elsewhere), the peak
    is :func:`peak_rss_bytes`.
    """
    peak = peak_rss_bytes()
    try:
        with open("/proc/self/statm") as f:
            now = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return f", peak RSS {peak / 1e9:.2f} GB"
    return f", RSS {now / 1e9:.2f} GB (peak {peak / 1e9:.2f} GB)"


class Progress:
    """Logs ``what: done/total unit (pct), rate unit/s, ETA`` every ``interval`` seconds.

    Silent when stderr is a terminal (a tqdm bar shows the same there) unless ``enabled`` says
    otherwise; messages go through the rank-0 filter of :func:`get_logger`.

    Args:
        logger: the module's logger.
        what: the phase, e.g. ``"caching hidden states"``.
        total: units the phase will process (``None``: unknown, no percentage or ETA).
        unit: the unit's name (``"rows"``, ``"steps"``, ``"episodes"``).
        interval: seconds between lines; ``None``: :func:`progress_interval`.
        enabled: ``None``: log only when stderr is not a TTY.

    The rate is the mean since the start. The ETA uses the rate over the last
    :attr:`WINDOW` logged lines instead (about five minutes at the default interval), so that a
    stall (a suspended process, a machine shared for a while, a slow first batch) stops skewing it
    once it is that far back; a line also shows that recent rate where it differs from the mean
    by more than 10%.
    """

    WINDOW = 10

    def __init__(self, logger: logging.Logger, what: str, total: Optional[int], unit: str = "rows",
                 interval: Optional[float] = None, enabled: Optional[bool] = None) -> None:
        self.logger = logger
        self.what = what
        self.total = total
        self.unit = unit
        self.interval = progress_interval() if interval is None else float(interval)
        self.enabled = (not sys.stderr.isatty()) if enabled is None else bool(enabled)
        self.done = 0
        self._t0 = time.perf_counter()
        self._last = self._t0
        # (time, done) at the start and at each logged line: the window the ETA's rate is taken over
        self._marks: deque[tuple[float, int]] = deque([(self._t0, 0)], maxlen=self.WINDOW + 1)

    def _rate_text(self, rate: float) -> str:
        return f"{rate:,.1f} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:,.2f} s/{self.unit[:-1] or self.unit}"

    def line(self) -> str:
        """The current progress line (also what :meth:`update` logs)."""
        now = time.perf_counter()
        elapsed = now - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        t_old, done_old = self._marks[0]
        recent = (self.done - done_old) / (now - t_old) if now > t_old else rate
        msg = f"{self.what}: {self.done:,}"
        if self.total:
            msg += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            msg += f" {self.unit}"
        msg += f", {self._rate_text(rate)}"
        if rate > 0 and recent > 0 and abs(recent / rate - 1) > 0.1:
            msg += f" ({self._rate_text(recent)} over the last {_duration(now - t_old)})"
        msg += f", elapsed {_duration(elapsed)}"
        if self.total and self.done < self.total and (recent > 0 or rate > 0):
            msg += f", ETA {_duration((self.total - self.done) / (recent if recent > 0 else rate))}"
        return msg + memory_note()

    def update(self, n: int = 1) -> None:
        """Counts ``n`` more units; logs a line when ``interval`` seconds passed since the last."""
        self.done += n
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self.logger.info(self.line())
            self._marks.append((now, self.done))

    def close(self) -> None:
        """Logs the final line (totals and the mean rate) once the phase ends."""
        if self.enabled:
            self.logger.info(self.line() + " (done)")
