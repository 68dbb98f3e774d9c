"""Report of a CTR cold-start suite: AUC and log-loss per phase, item-bootstrap CIs, paired Δ, a plot.

For every (method, phase): the metric of each seed's run over all test items' query rows pooled,
averaged over seeds; its 95% CI resamples the **items** (``n_boot`` resamples, the same ones for
every method, seed and phase, so differences are paired). Δ vs the reference: the same statistic of
``metric(method) - metric(reference)`` per resample, refused when the two methods' item tasks
differ (fingerprints). p: two-sided bootstrap p-value of Δ = 0 (smallest resolvable 2/n_boot).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from metarec.evaluation.tables import markdown_table
from metarec.recsys.ctr.metrics import auc, item_resamples, log_loss, weighted_auc, weighted_log_loss
from metarec.recsys.ctr.split import PHASES

METRICS = ("auc", "logloss")
N_BOOT = 1000


def is_ctr_results(results: Sequence[Any]) -> bool:
    """True when the cells' records are per-item CTR records."""
    return any(r.episodes and "p_cold" in r.episodes[0] for r in results)


def _flat(records: Sequence[dict[str, Any]], order: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Item position ``(n,)``, clicks ``(n,)`` and probabilities per phase ``(n,)`` of all query rows."""
    by = {r["fingerprint"]: r for r in records}
    rs = [by[fp] for fp in order]
    item = np.concatenate([np.full(len(r["click"]), j) for j, r in enumerate(rs)])
    click = np.concatenate([np.asarray(r["click"], dtype=np.float64) for r in rs])
    probs = {ph: np.concatenate([np.asarray(r[f"p_{ph}"], dtype=np.float64) for r in rs]) for ph in PHASES}
    return item, click, probs


def _boot(metric: str, prob: np.ndarray, click: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weighted_auc(prob, click, weights) if metric == "auc" else weighted_log_loss(prob, click, weights)


def summarize_ctr(suite: Any, results: Sequence[Any], n_boot: int = N_BOOT) -> list[dict[str, Any]]:
    """One row per (method, phase): items, AUC and log-loss with CIs, Δ vs the reference."""
    by: dict[str, list[Any]] = defaultdict(list)
    for r in results:
        by[r.cell.method].append(r)
    ref_name = suite.reference or ""
    order = sorted(e["fingerprint"] for e in (by.get(ref_name) or next(iter(by.values())))[0].episodes)
    counts = item_resamples(len(order), n_boot, seed=0)
    stats: dict[str, dict[str, dict[str, tuple[float, np.ndarray]]]] = {}
    for method, cells in by.items():
        if any(sorted(e["fingerprint"] for e in c.episodes) != order for c in cells):
            stats[method] = {}
            continue
        per: dict[str, dict[str, list[tuple[float, np.ndarray]]]] = defaultdict(lambda: defaultdict(list))
        for c in cells:
            item, click, probs = _flat(c.episodes, order)
            w = counts[:, item]
            for ph in PHASES:
                per["auc"][ph].append((auc(probs[ph], click), _boot("auc", probs[ph], click, w)))
                per["logloss"][ph].append((log_loss(probs[ph], click), _boot("logloss", probs[ph], click, w)))
        stats[method] = {k: {ph: (float(np.mean([p for p, _ in v])), np.mean([b for _, b in v], axis=0))
                             for ph, v in d.items()} for k, d in per.items()}
    rows = []
    for method in suite.methods:
        cells = by.get(method, [])
        if not cells:
            continue
        for ph in PHASES:
            row: dict[str, Any] = {"method": method, "phase": ph, "seeds": len(cells), "items": len(order),
                                   "query_rows": int(sum(len(e["click"]) for e in cells[0].episodes)),
                                   "fit_s": float(np.mean([c.result.get("fit_seconds", 0.0) for c in cells]))}
            if not stats[method]:
                row["paired"] = f"refused: {method} saw different item tasks than {ref_name}"
                rows.append(row)
                continue
            for k in METRICS:
                point, boot = stats[method][k][ph]
                lo, hi = np.nanpercentile(boot, [2.5, 97.5])
                row.update({k: point, f"{k}_lo": float(lo), f"{k}_hi": float(hi)})
                if ref_name and method != ref_name and stats.get(ref_name):
                    rpoint, rboot = stats[ref_name][k][ph]
                    d = boot - rboot
                    dlo, dhi = np.nanpercentile(d, [2.5, 97.5])
                    p = min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0)))
                    row.update({f"d_{k}": point - rpoint, f"d_{k}_lo": float(dlo), f"d_{k}_hi": float(dhi),
                                f"p_{k}": max(float(p), 2.0 / n_boot)})
            rows.append(row)
    return rows


def _ci(row: dict[str, Any], k: str) -> str:
    if k not in row or math.isnan(row[k]):
        return "—"
    return f"{row[k]:.4f} [{row[f'{k}_lo']:.4f}, {row[f'{k}_hi']:.4f}]"


def _delta(row: dict[str, Any], k: str) -> str:
    if f"d_{k}" not in row:
        return "—"
    return f"{row[f'd_{k}']:+.4f} [{row[f'd_{k}_lo']:+.4f}, {row[f'd_{k}_hi']:+.4f}] (p={row[f'p_{k}']:.2g})"


def phase_table(rows: list[dict[str, Any]], reference: str = "") -> str:
    header = ["method", "phase", "AUC [95% CI]", "log-loss [95% CI]"]
    if reference:
        header += [f"ΔAUC vs {reference}", f"Δlog-loss vs {reference}"]
    body = []
    for r in rows:
        cells = [r["method"], r["phase"], _ci(r, "auc"), _ci(r, "logloss")]
        if reference:
            cells += [_delta(r, "auc"), _delta(r, "logloss")]
        body.append(cells)
    return markdown_table(header, body)


def ctr_markdown_report(suite: Any, rows: list[dict[str, Any]], results: Sequence[Any]) -> str:
    parts = [f"## {suite.name}"]
    if suite.description:
        parts.append(suite.description.strip())
    seeds = max((r["seeds"] for r in rows), default=1)
    first = rows[0] if rows else {}
    parts.append(
        f"AUC and log-loss over the query impressions of all {first.get('items', '?')} new items pooled "
        f"({first.get('query_rows', '?')} rows), per phase: `cold` (initial ID embedding), then after warm-up batch "
        f"a, b, c. Mean over {seeds} seed(s); [95% CI] from {N_BOOT} bootstrap resamples of the items. "
        + (f"Δ: paired difference to `{suite.reference}` over the same item resamples (bootstrap p)."
           if suite.reference else ""))
    parts.append("**Measured**\n\n" + phase_table(rows, suite.reference or ""))
    fit = {r["method"]: r["fit_s"] for r in rows}
    parts.append("Mean fit seconds per cell: " + ", ".join(f"`{m}` {s:.0f}" for m, s in fit.items()))
    if suite.reported:
        rep = [[r["method"], r.get("phase", ""), r.get("metric", "auc"), f"{float(r['value']):.4f}", r["source"]]
               for r in suite.reported]
        parts.append("**Reported** (copied from the cited paper, not measured here; a different dataset)\n\n"
                     + markdown_table(["method", "phase", "metric", "value", "source"], rep))
    rep = next((r.result.get("filter_report") for r in results if r.result.get("filter_report")), None)
    if rep:
        s, rd = rep["split"], rep["read"]
        parts.append(
            "**Filtering** (counted, never silent): "
            f"read {rd['interactions']} rows from {rd['source']} (skipped lines: {sum(rd['skipped_lines'].values())}), "
            f"click rate {rd['click_rate']:.3f}; {s['old_items']} old items ({s['train_rows']} training rows, "
            f"{s['meta_items']} with >= {2 * s['k_shot']} rows as meta-training tasks); {s['new_items_count']} new "
            f"items: {s['test_items']} test tasks ({s['test_rows']} rows, {s['query_rows']} query), "
            f"{s['new_items_too_few']} with fewer than {3 * s['k_shot'] + s['min_query']} rows unused "
            f"({s['new_item_rows_unused']} rows).")
    refused = [r["paired"] for r in rows if r.get("paired", "").startswith("refused")]
    if refused:
        parts.append("Refused pairings:\n" + "\n".join(f"- {m}" for m in dict.fromkeys(refused)))
    return "\n\n".join(parts) + "\n"


def plot_auc_phases(rows: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """AUC against warm-up phase, one line per method, 95% CI bars."""
    from metarec.evaluation.plots import save_figure, plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(PHASES))
    for j, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        rs = {r["phase"]: r for r in rows if r["method"] == method and "auc" in r}
        if len(rs) != len(PHASES):
            continue
        y = np.array([rs[p]["auc"] for p in PHASES])
        err = np.array([[y[i] - rs[p]["auc_lo"], rs[p]["auc_hi"] - y[i]] for i, p in enumerate(PHASES)]).T
        # A seed-mean point can sit just outside a percentile interval (or a tiny set leave it nan).
        err = np.nan_to_num(np.clip(err, 0.0, None))
        ax.errorbar(x + 0.03 * (j - 2), y, yerr=err, marker="o", capsize=3, label=method)
    ax.set_xticks(x, labels=["cold", "after a", "after b", "after c"])
    ax.set_xlabel("warm-up phase")
    ax.set_ylabel("AUC (query impressions, pooled)")
    ax.set_title(f"{title}: AUC vs warm-up, 95% item-bootstrap CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out, "auc-phases")


def write_ctr_reports(suite: Any, root: Path, results: Sequence[Any]) -> tuple[str, list[Path]]:
    """report.md, report.csv and the AUC-vs-phase plot of a CTR suite."""
    import pandas as pd

    from metarec.files import atomic_write_text

    rows = summarize_ctr(suite, results)
    md = ctr_markdown_report(suite, rows, results)
    files = [root / "report.md", root / "report.csv"]
    atomic_write_text(files[0], md)
    atomic_write_text(files[1], pd.DataFrame(rows).to_csv(index=False))
    files += plot_auc_phases(rows, root / "plots", suite.name)
    return md, files
