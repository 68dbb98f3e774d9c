"""Plots (matplotlib, PNG + SVG): accuracy vs n_shot with CI bands; per-task bars."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def plot_shots_curve(rows: list[dict[str, Any]], out: Path, synthetic: bool = False) -> list[Path]:
    """Accuracy vs n_shot per method, one figure per family (when a family has ≥ 2 shot values)."""
    files: list[Path] = []
    by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    for family, frows in by_family.items():
        if len({r["n_shot"] for r in frows}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in dict.fromkeys(r["method"] for r in frows):
            pts = sorted((r["n_shot"], 100 * r["acc"], 100 * (r["acc_ci95"] if not math.isnan(r["acc_ci95"]) else r["acc_seed_std"]))
                         for r in frows if r["method"] == method)
            x = [p[0] for p in pts]
            y = [p[1] for p in pts]
            e = [0.0 if math.isnan(p[2]) else p[2] for p in pts]
            ax.plot(x, y, marker="o", label=method)
            ax.fill_between(x, [a - b for a, b in zip(y, e)], [a + b for a, b in zip(y, e)], alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["n_shot"] for r in frows}), labels=[str(s) for s in sorted({r["n_shot"] for r in frows})])
        ax.set_xlabel("n_shot (support examples per class)")
        ax.set_ylabel("query accuracy (%)")
        ax.set_title(f"{family}{' (synthetic)' if synthetic else ''}: accuracy vs shots, 95% CI bands")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        files += _save(fig, out, f"shots-{family}")
    return files


def plot_task_bars(results: list[Any], out: Path, synthetic: bool = False, max_tasks: int = 40) -> list[Path]:
    """Per-task accuracy bars per method for families evaluated once per task (e.g. ARSC)."""
    files: list[Path] = []
    groups: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for r in results:
        groups[(r.cell.family, r.cell.n_shot)].append(r)
    for (family, shot), rs in groups.items():
        tasks = [e["task"] for e in rs[0].episodes]
        if not tasks or len(set(tasks)) != len(tasks) or len(tasks) > max_tasks:
            continue  # only for one-episode-per-task protocols
        methods = list(dict.fromkeys(r.cell.method for r in rs if r.cell.seed == rs[0].cell.seed))
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(tasks) * max(1, len(methods)) / 2), 4))
        width = 0.8 / max(len(methods), 1)
        for j, m in enumerate(methods):
            r = next(x for x in rs if x.cell.method == m)
            acc = {e["task"]: 100 * e["acc"] for e in r.episodes}
            ax.bar([i + j * width for i in range(len(tasks))], [acc.get(t, 0.0) for t in tasks], width, label=m)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], labels=tasks, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{family}{' (synthetic)' if synthetic else ''}, {shot}-shot: accuracy per task")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        files += _save(fig, out, f"tasks-{family}-{shot}shot")
    return files


def plot_method_bars(rows: list[dict[str, Any]], out: Path, synthetic: bool = False) -> list[Path]:
    """Accuracy per method with 95% CI error bars, one figure per (family, n_shot)."""
    files: list[Path] = []
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["family"], r["n_shot"])].append(r)
    for (family, shot), rs in groups.items():
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rs)), 3.6))
        acc = [100 * r["acc"] for r in rs]
        err = [0.0 if math.isnan(e) else 100 * e for e in
               (r["acc_ci95"] if not math.isnan(r["acc_ci95"]) else r["acc_seed_std"] for r in rs)]
        ax.bar(range(len(rs)), acc, yerr=err, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rs)), labels=[r["method"] for r in rs], rotation=30, ha="right")
        ax.set_ylabel("query accuracy (%)")
        ax.set_ylim(max(0.0, min(acc) - 15), min(100.0, max(a + e for a, e in zip(acc, err)) + 5))
        ax.set_title(f"{family}{' (synthetic)' if synthetic else ''}, {shot}-shot, 95% CI")
        ax.grid(axis="y", alpha=0.3)
        files += _save(fig, out, f"methods-{family}-{shot}shot")
    return files
