"""Library logging: one logger per module, messages from rank 0 only under DDP."""

from __future__ import annotations

import logging
import os


class _RankZeroFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0"
        return rank == "0" or record.levelno >= logging.ERROR


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RankZeroFilter) for f in logger.filters):
        logger.addFilter(_RankZeroFilter())
    return logger
