"""Formatting of results: ``mean ± ci`` cells and Markdown tables."""

from __future__ import annotations

import math
from typing import Sequence


def format_acc(mean: float, ci: float, digits: int = 1) -> str:
    """Accuracy in percent, e.g. ``"71.3 ± 1.2"`` (``ci`` is a 95% half-width)."""
    if math.isnan(ci):
        return f"{100 * mean:.{digits}f}"
    return f"{100 * mean:.{digits}f} ± {100 * ci:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
