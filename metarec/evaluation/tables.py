"""Formatting of results: ``mean ± ci`` cells and Markdown tables."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from metarec.evaluation.stats import mean_ci95


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


def per_task_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table of test accuracy and macro-F1 per task, then the means over tasks ± 95% CI.

    Args:
        records: per-episode test records (``RunResult.episodes``), e.g. one per fixed ARSC task.
            Records without ``"f1"`` (written before macro-F1 was recorded) show ``—``.
    """
    by_task: dict[str, list[float]] = {}
    f1_by_task: dict[str, list[float]] = {}
    n_query: dict[str, int] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(float(r["acc"]))
        f1_by_task.setdefault(r["task"], []).append(float(r.get("f1", math.nan)))
        n_query[r["task"]] = n_query.get(r["task"], 0) + int(r.get("n_query", 0))

    def pct(values: list[float]) -> str:
        return "—" if any(math.isnan(v) for v in values) else f"{100 * float(np.mean(values)):.1f}"

    rows = [[t, n_query[t], f"{100 * float(np.mean(a)):.1f}", pct(f1_by_task[t])] for t, a in sorted(by_task.items())]
    mean, ci = mean_ci95([float(np.mean(a)) for a in by_task.values()])
    task_f1 = [float(np.mean(a)) for a in f1_by_task.values()]
    f1_cell = "—" if any(math.isnan(v) for v in task_f1) else format_acc(*mean_ci95(task_f1))
    rows.append([f"mean over {len(by_task)} tasks", sum(n_query.values()), format_acc(mean, ci), f1_cell])
    return markdown_table(["task", "queries", "acc (%)", "macro-F1 (%)"], rows)
