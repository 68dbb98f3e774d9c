"""Plots (matplotlib, PNG + SVG): accuracy and macro-F1 vs n_shot with CI bands; per-method bars; per-task bars or heatmap.

Every figure has one panel per metric of :data:`METRICS` (accuracy, macro-F1); rows without a
metric (written before it was recorded) leave its panel empty.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: (row/record key, axis label) of the metrics every figure shows, one panel each.
METRICS: tuple[tuple[str, str], ...] = (("acc", "accuracy (%)"), ("f1", "macro-F1 (%)"))


def _err(row: dict[str, Any], metric: str) -> float:
    """The error bar of a summary row: its 95% CI, else the std over seeds, else 0 (percent)."""
    for key in (f"{metric}_ci95", f"{metric}_seed_std"):
        v = row.get(key, math.nan)
        if not math.isnan(v):
            return 100 * v
    return 0.0


def save_figure(fig: Any, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def plot_shots_curve(rows: list[dict[str, Any]], out: Path, synthetic: bool = False) -> list[Path]:
    """Accuracy and macro-F1 vs n_shot per method, one figure per family (when a family has ≥ 2 shot values)."""
    files: list[Path] = []
    by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    for family, frows in by_family.items():
        if len({r["n_shot"] for r in frows}) < 2:
            continue
        fig, axes = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 4))
        shots = sorted({r["n_shot"] for r in frows})
        for ax, (metric, label) in zip(axes, METRICS):
            for method in dict.fromkeys(r["method"] for r in frows):
                pts = sorted((r["n_shot"], 100 * r.get(metric, math.nan), _err(r, metric))
                             for r in frows if r["method"] == method)
                x, y, e = [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]
                ax.plot(x, y, marker="o", label=method)
                ax.fill_between(x, [a - b for a, b in zip(y, e)], [a + b for a, b in zip(y, e)], alpha=0.2)
            ax.set_xscale("log", base=2)
            ax.set_xticks(shots, labels=[str(v) for v in shots])
            ax.set_xlabel("n_shot (support examples per class)")
            ax.set_ylabel(f"query {label}")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{family}{' (synthetic)' if synthetic else ''}: accuracy and macro-F1 vs shots, 95% CI bands")
        files += save_figure(fig, out, f"shots-{family}")
    return files


def plot_task_bars(results: list[Any], out: Path, synthetic: bool = False, max_tasks: int = 40,
                   max_bar_methods: int = 5) -> list[Path]:
    """Per-task accuracy and macro-F1 per method for families evaluated once per task (e.g. ARSC).

    Grouped bars for up to ``max_bar_methods`` methods; beyond that (13 methods x 12 tasks would
    be 156 bars a panel) a heatmap of methods x tasks with every value written in its cell.
    """
    files: list[Path] = []
    groups: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for r in results:
        groups[(r.cell.family, r.cell.n_shot)].append(r)
    for (family, shot), rs in groups.items():
        tasks = [e["task"] for e in rs[0].episodes]
        if not tasks or len(set(tasks)) != len(tasks) or len(tasks) > max_tasks:
            continue  # only for one-episode-per-task protocols
        methods = list(dict.fromkeys(r.cell.method for r in rs if r.cell.seed == rs[0].cell.seed))
        values = {}
        for m in methods:
            r = next(x for x in rs if x.cell.method == m)
            values[m] = {metric: {e["task"]: 100 * e.get(metric, math.nan) for e in r.episodes} for metric, _ in METRICS}
        title = f"{family}{' (synthetic)' if synthetic else ''}, {shot}-shot: accuracy and macro-F1 per task"
        if len(methods) > max_bar_methods:
            fig = _task_heatmap(methods, tasks, values, title)
        else:
            fig = _task_bars(methods, tasks, values, title)
        files += save_figure(fig, out, f"tasks-{family}-{shot}shot")
    return files


def _task_bars(methods: list[str], tasks: list[str], values: dict[str, Any], title: str) -> Any:
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(max(6, 0.3 * len(tasks) * max(1, len(methods))),
                                                      4 * len(METRICS)), squeeze=False)
    width = 0.8 / max(len(methods), 1)
    for ax, (metric, label) in zip(axes[:, 0], METRICS):
        for j, m in enumerate(methods):
            val = values[m][metric]
            ax.bar([i + j * width for i in range(len(tasks))], [val.get(t, 0.0) for t in tasks], width, label=m)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], labels=tasks, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=max(1, len(methods) // 5))
    axes[0, 0].set_title(title)
    return fig


def _task_heatmap(methods: list[str], tasks: list[str], values: dict[str, Any], title: str) -> Any:
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(max(7, 0.75 * len(tasks) + 2), 2 * (0.38 * len(methods) + 2.0)),
                             squeeze=False, layout="constrained")
    for ax, (metric, label) in zip(axes[:, 0], METRICS):
        grid = [[values[m][metric].get(t, math.nan) for t in tasks] for m in methods]
        finite = [v for row in grid for v in row if not math.isnan(v)]
        low = min(50.0, 10 * math.floor(min(finite, default=50.0) / 10))
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=low, vmax=100)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v < (low + 100) / 2 else "black")
        ax.set_xticks(range(len(tasks)), labels=tasks, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(methods)), labels=methods, fontsize=8)
        fig.colorbar(im, ax=ax, label=label, fraction=0.03, pad=0.01)
        ax.set_title(label, fontsize=9)
    fig.suptitle(title)
    return fig


def plot_method_bars(rows: list[dict[str, Any]], out: Path, synthetic: bool = False) -> list[Path]:
    """Accuracy and macro-F1 per method with 95% CI error bars, one figure per (family, n_shot)."""
    files: list[Path] = []
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["family"], r["n_shot"])].append(r)
    for (family, shot), rs in groups.items():
        fig, axes = plt.subplots(1, len(METRICS), figsize=(len(METRICS) * max(4.0, 0.9 * len(rs)), 3.6))
        for ax, (metric, label) in zip(axes, METRICS):
            val = [100 * r.get(metric, math.nan) for r in rs]
            err = [_err(r, metric) for r in rs]
            ax.bar(range(len(rs)), val, yerr=err, capsize=4, color="tab:blue", alpha=0.8)
            ax.set_xticks(range(len(rs)), labels=[r["method"] for r in rs], rotation=30, ha="right")
            ax.set_ylabel(f"query {label}")
            finite = [(v, e) for v, e in zip(val, err) if not math.isnan(v)]
            if finite:
                ax.set_ylim(max(0.0, min(v for v, _ in finite) - 15), min(100.0, max(v + e for v, e in finite) + 5))
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{family}{' (synthetic)' if synthetic else ''}, {shot}-shot, 95% CI")
        files += save_figure(fig, out, f"methods-{family}-{shot}shot")
    return files
