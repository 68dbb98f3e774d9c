"""Paper-style tables from a run store (no re-running): Markdown, CSV, LaTeX, plots."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from metarec.bench.store import RunStore, atomic_write_text
from metarec.bench.suite import Cell, Suite
from metarec.evaluation.stats import mean_ci95, paired_test
from metarec.evaluation.tables import format_acc, markdown_table


class EpisodeMismatchError(ValueError):
    """Two runs to be paired were evaluated on different episodes."""


@dataclass
class CellResult:
    cell: Cell
    key: str
    result: dict[str, Any]
    episodes: list[dict[str, Any]]

    @property
    def accs(self) -> np.ndarray:
        return self.scores("acc")

    def scores(self, metric: str) -> np.ndarray:
        """Per-episode ``metric`` (``acc`` or ``f1``); NaN for records written before it existed."""
        return np.array([e.get(metric, math.nan) for e in self.episodes], dtype=np.float64)


#: Per-episode classification metrics every report shows: (record key, column title).
METRICS: tuple[tuple[str, str], ...] = (("acc", "accuracy"), ("f1", "macro-F1"))


def paired_cells(a: CellResult, b: CellResult, metric: str = "acc") -> tuple[np.ndarray, np.ndarray]:
    """Per-episode ``metric`` of two cells on the same episodes, or EpisodeMismatchError."""
    if a.result["episode_set"] != b.result["episode_set"]:
        raise EpisodeMismatchError(
            f"cannot pair {a.cell.id} with {b.cell.id}: episode sets differ "
            f"({a.result['episode_set']} vs {b.result['episode_set']})"
        )
    return a.scores(metric), b.scores(metric)


def _group(results: list[CellResult]) -> dict[tuple[str, int], dict[str, list[CellResult]]]:
    out: dict[tuple[str, int], dict[str, list[CellResult]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        out[(r.cell.family, r.cell.n_shot)][r.cell.method].append(r)
    return out


def _metric_summary(cells: list[CellResult], metric: str) -> dict[str, float]:
    """``<metric>``, ``<metric>_ci95`` and ``<metric>_seed_std`` of one method's cells."""
    per_seed = [float(r.scores(metric).mean()) for r in cells]
    if len(cells) == 1:
        x = cells[0].scores(metric)
        mean, ci = (math.nan, math.nan) if np.isnan(x).any() else mean_ci95(x)
    else:
        mean, ci = float(np.mean(per_seed)), math.nan
    std = float(np.std(per_seed, ddof=1)) if len(cells) > 1 else math.nan
    return {metric: mean, f"{metric}_ci95": ci, f"{metric}_seed_std": std}


def _paired_summary(cells: list[CellResult], ref_by_seed: dict[int, CellResult], reference: str,
                    metric: str) -> dict[str, Any]:
    """Paired Δ (mean ± 95% CI, t-test p) of ``metric`` against the reference on the same episodes."""
    suffix = "" if metric == "acc" else f"_{metric}"
    a_all, b_all = [], []
    for r in cells:
        if r.cell.seed not in ref_by_seed:
            raise EpisodeMismatchError(f"no {reference} run for seed {r.cell.seed}")
        a, b = paired_cells(r, ref_by_seed[r.cell.seed], metric)
        a_all.append(a)
        b_all.append(b)
    a_cat, b_cat = np.concatenate(a_all), np.concatenate(b_all)
    if np.isnan(a_cat).any() or np.isnan(b_cat).any():
        return {f"diff{suffix}": math.nan, f"diff{suffix}_ci95": math.nan, f"p_value{suffix}": math.nan}
    pr = paired_test(a_cat, b_cat)
    out = {f"diff{suffix}": pr.mean_diff, f"diff{suffix}_ci95": pr.ci95, f"p_value{suffix}": pr.p_value}
    if metric == "acc":
        out["paired"] = f"paired t, n={pr.n}"
    return out


def summarize(suite: Suite, results: list[CellResult]) -> list[dict[str, Any]]:
    """One row per (family, n_shot, method): accuracy and macro-F1 with paired Δ vs the reference, costs."""
    rows = []
    for (family, shot), by_method in _group(results).items():
        ref = by_method.get(suite.reference or "", [])
        ref_by_seed = {r.cell.seed: r for r in ref}
        for method in suite.methods:
            cells = sorted(by_method.get(method, []), key=lambda r: r.cell.seed)
            if not cells:
                continue
            row: dict[str, Any] = {
                "family": family, "n_way": cells[0].result.get("n_way"), "n_shot": shot, "method": method,
                "seeds": len(cells), "episodes": int(sum(len(r.episodes) for r in cells)),
            }
            for metric, _ in METRICS:
                row.update(_metric_summary(cells, metric))
            row.update({
                "adapt_ms": 1000 * float(np.mean([r.result.get("adapt_s_per_episode", math.nan) for r in cells])),
                "fit_s": float(np.mean([r.result.get("fit_seconds", 0.0) for r in cells])),
                "peak_mb": float(max(r.result.get("peak_rss_mb", math.nan) for r in cells)),
                "episode_set": cells[0].result["episode_set"],
            })
            row.update(diff=math.nan, diff_ci95=math.nan, p_value=math.nan, paired="",
                       diff_f1=math.nan, diff_f1_ci95=math.nan, p_value_f1=math.nan)
            if suite.reference and method != suite.reference and ref_by_seed:
                try:
                    for metric, _ in METRICS:
                        row.update(_paired_summary(cells, ref_by_seed, suite.reference, metric))
                except EpisodeMismatchError as e:
                    row["paired"] = f"refused: {e}"
            rows.append(row)
    return rows


def _acc_cell(row: dict[str, Any], metric: str = "acc") -> str:
    if math.isnan(row[metric]):
        return "—"
    if row["seeds"] > 1:
        return f"{100 * row[metric]:.1f} ± {100 * row[f'{metric}_seed_std']:.1f} (std, {row['seeds']} seeds)"
    return format_acc(row[metric], row[f"{metric}_ci95"])


def _diff_cell(row: dict[str, Any], metric: str = "acc") -> str:
    if row["paired"].startswith("refused"):
        return "refused (episodes differ)"
    suffix = "" if metric == "acc" else f"_{metric}"
    if math.isnan(row[f"diff{suffix}"]):
        return "—"
    p = row[f"p_value{suffix}"]
    return f"{100 * row[f'diff{suffix}']:+.1f} ± {100 * row[f'diff{suffix}_ci95']:.1f} (p={p:.2g})"


def markdown_report(suite: Suite, rows: list[dict[str, Any]]) -> str:
    title = f"## {suite.name}" + (" — synthetic data" if suite.synthetic else "")
    parts = [title]
    if suite.description:
        parts.append(suite.description.strip())
    parts.append(
        "Accuracy and macro-F1 (%) on the fixed test episodes: mean ± 95% CI over episodes (one seed) or "
        f"mean ± std of per-seed means (several seeds). Δ: paired difference to `{suite.reference}` on the "
        "same episodes (mean ± 95% CI, paired t-test p)." if suite.reference else
        "Accuracy and macro-F1 (%) on the fixed test episodes: mean ± 95% CI over episodes."
    )
    header = ["family", "way", "shot", "method", "accuracy", "Δ acc vs ref", "macro-F1", "Δ F1 vs ref", "episodes",
              "adapt ms/ep", "fit s", "peak MB"]
    body = [[r["family"], r["n_way"], r["n_shot"], r["method"], _acc_cell(r), _diff_cell(r), _acc_cell(r, "f1"),
             _diff_cell(r, "f1"), r["episodes"], f"{r['adapt_ms']:.1f}", f"{r['fit_s']:.0f}", f"{r['peak_mb']:.0f}"]
            for r in rows]
    parts.append(("**Measured (synthetic data)**" if suite.synthetic else "**Measured**") + "\n\n" + markdown_table(header, body))
    if suite.reported:
        rep = [[r.get("family", ""), r.get("n_shot", ""), r["method"], f"{float(r['value']):.2f}", r["source"]]
               + ([r.get("note", "")] if any("note" in x for x in suite.reported) else []) for r in suite.reported]
        header = ["family", "shot", "method", "accuracy", "source"]
        if any("note" in x for x in suite.reported):
            header.append("note")
        parts.append("**Reported** (copied from the cited papers, not measured here)\n\n" + markdown_table(header, rep))
    if suite.exclude:
        parts.append("Not run (excluded by the suite, with its reason):\n" + "\n".join(f"- `{e['method']}` on `{e['family']}`: {e['reason']}"
                                                             for e in suite.exclude))
    refused = [r["paired"] for r in rows if r["paired"].startswith("refused")]
    if refused:
        parts.append("Refused pairings:\n" + "\n".join(f"- {m}" for m in refused))
    return "\n\n".join(parts) + "\n"


def latex_report(suite: Suite, rows: list[dict[str, Any]]) -> str:
    lines = [r"\begin{tabular}{lllrlrl}", r"\toprule",
             r"Family & Shot & Method & Accuracy (\%) & $\Delta$ & Macro-F1 (\%) & $\Delta$ \\", r"\midrule"]
    for r in rows:
        cells = [c.replace("±", r"$\pm$") for c in (_acc_cell(r), _diff_cell(r), _acc_cell(r, "f1"), _diff_cell(r, "f1"))]
        lines.append(f"{r['family']} & {r['n_shot']} & {r['method'].replace('_', chr(92) + '_')} & {' & '.join(cells)} \\\\")
    if suite.reported:
        lines.append(r"\midrule")
        lines.append(r"\multicolumn{7}{l}{\emph{Reported}} \\")
        for r in suite.reported:
            lines.append(f"{r.get('family', '')} & {r.get('n_shot', '')} & {r['method']} & {float(r['value']):.2f} & {r['source']} & & \\\\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_reports(suite: Suite, store: RunStore, results: list[CellResult], latex: bool = False) -> tuple[str, list[Path]]:
    """Writes report.md, report.csv (and report.tex), plots; returns the Markdown and files."""
    import pandas as pd

    from metarec.evaluation.plots import plot_method_bars, plot_shots_curve, plot_task_bars

    from metarec.recsys.report import is_rating_results, rating_markdown_report, summarize_ratings

    from metarec.recsys.ctr.report import is_ctr_results, write_ctr_reports

    if is_ctr_results(results):  # per-item click records (cold-start CTR family): metrics per warm-up phase
        return write_ctr_reports(suite, store.root, results)
    if is_rating_results(results):  # per-user rating records (cold-start family): metrics per state
        rating_rows = summarize_ratings(suite, results)
        md = rating_markdown_report(suite, rating_rows, results)
        files = [store.root / "report.md", store.root / "report.csv"]
        atomic_write_text(files[0], md)
        atomic_write_text(files[1], pd.DataFrame(rating_rows).to_csv(index=False))
        return md, files
    rows = summarize(suite, results)
    md = markdown_report(suite, rows)
    files = [store.root / "report.md", store.root / "report.csv"]
    atomic_write_text(files[0], md)
    atomic_write_text(files[1], pd.DataFrame(rows).to_csv(index=False))
    if latex:
        files.append(store.root / "report.tex")
        atomic_write_text(files[-1], latex_report(suite, rows))
    files += plot_method_bars(rows, store.root / "plots", synthetic=suite.synthetic)
    files += plot_shots_curve(rows, store.root / "plots", synthetic=suite.synthetic)
    files += plot_task_bars(results, store.root / "plots", synthetic=suite.synthetic)
    return md, files


def collect(store: RunStore, keyed_cells: list[tuple[Cell, str]]) -> list[CellResult]:
    out = []
    for cell, key in keyed_cells:
        res: Optional[dict[str, Any]] = store.load(key)
        if res is not None:
            out.append(CellResult(cell, key, res, store.episodes(key)))
    return out
