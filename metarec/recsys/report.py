"""Report of a rating suite (the cold-start family): metrics per state, mean ± 95% CI over users.

Used by :func:`metarec.bench.report.write_reports` when a suite's per-episode records are per-user
rating records (they carry ``state`` and ``mae``). For every (state, method):

* each metric (MAE, RMSE, nDCG@1, nDCG@3, AUC) is first averaged over a method's seeds *per
  user* (the test users are the same for every seed: the support/query draw has its own seed),
  then reported as mean ± 95% CI (Student t) over users;
* AUC leaves out users whose query has one class only; their number is shown;
* ΔMAE is the paired difference to the reference method over the same users (paired t-test),
  refused when the two methods were not evaluated on identical user tasks (fingerprints).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from metarec.recsys.metrics import RATING_METRICS
from metarec.evaluation.stats import mean_ci95, paired_test
from metarec.evaluation.tables import markdown_table

STATE_ORDER = ("existing/existing", "existing/new", "new/existing", "new/new")


def is_rating_results(results: Sequence[Any]) -> bool:
    """True when the cells' records are per-user rating records."""
    return any(r.episodes and "state" in r.episodes[0] and "mae" in r.episodes[0] for r in results)


def _per_user(cells: Sequence[Any], state: str) -> dict[str, dict[str, float]]:
    """fingerprint → metric → mean over the cells (seeds) that evaluated that user task."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        for e in c.episodes:
            if e["state"] != state:
                continue
            for k in RATING_METRICS:
                v = e.get(k)
                if v is not None and not math.isnan(v):
                    acc[e["fingerprint"]][k].append(float(v))
    return {fp: {k: float(np.mean(v)) for k, v in d.items()} for fp, d in acc.items()}


def summarize_ratings(suite: Any, results: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per (family, state, method): users, each metric's mean and CI, ΔMAE vs the reference."""
    by: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by[r.cell.family][r.cell.method].append(r)
    rows = []
    for family, methods in by.items():
        for state in STATE_ORDER:
            ref = _per_user(methods.get(suite.reference or "", []), state)
            for method in suite.methods:
                cells = methods.get(method, [])
                users = _per_user(cells, state)
                if not cells:
                    continue
                row: dict[str, Any] = {"family": family, "state": state, "method": method, "seeds": len(cells),
                                       "users": len(users),
                                       "fit_s": float(np.mean([c.result.get("fit_seconds", 0.0) for c in cells]))}
                for k in RATING_METRICS:
                    vals = [u[k] for u in users.values() if k in u]
                    row[k], row[f"{k}_ci95"] = mean_ci95(vals) if vals else (math.nan, math.nan)
                    row[f"{k}_users"] = len(vals)
                row.update(d_mae=math.nan, d_mae_ci95=math.nan, p_value=math.nan, paired="")
                if suite.reference and method != suite.reference and ref and users:
                    if set(ref) != set(users):
                        row["paired"] = f"refused: {method} and {suite.reference} saw different user tasks in {state}"
                    else:
                        keys = sorted(users)
                        pr = paired_test([users[k]["mae"] for k in keys], [ref[k]["mae"] for k in keys])
                        row.update(d_mae=pr.mean_diff, d_mae_ci95=pr.ci95, p_value=pr.p_value,
                                   paired=f"paired t, n={pr.n}")
                rows.append(row)
    return rows


def _cell(mean: float, ci: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.3f}" if math.isnan(ci) else f"{mean:.3f} ± {ci:.3f}"


def _filter_table(results: Sequence[Any]) -> str:
    rep = next((r.result.get("filter_report") for r in results if r.result.get("filter_report")), None)
    if not rep:
        return ""
    split = rep["split"]
    body = [[s, split[s]["users_kept"], split[s]["users_too_few"], split[s]["users_too_many"], split[s]["ratings"],
             split[s]["ratings_in_kept_tasks"]] for s in ("train", *STATE_ORDER) if s in split]
    read = rep.get("read", {})
    head = (f"Split: cut {split['cut_utc']} (new users: first rating at or after it); new items: {split['new_items']}"
            + (f" (released in or after {split['item_year_cut']})" if split.get("item_year_cut") else "")
            + f"; {split['existing_users']} existing / {split['new_users']} new users, {split['existing_items']} "
            f"existing / {split['new_items_count']} new items. A user is a task in a state with "
            f"{split['min_ratings']}–{split['max_ratings']} ratings there; query = {split['n_query']} items. "
            f"Read {read.get('interactions', '?')} interactions from {read.get('source', '?')}; skipped lines: "
            f"{sum(read.get('skipped_lines', {}).values()) if read else 0}.")
    return head + "\n\n" + markdown_table(["state", "users kept", "too few", "too many", "ratings", "ratings in kept users"],
                                          body)


def rating_markdown_report(suite: Any, rows: list[dict[str, Any]], results: Sequence[Any]) -> str:
    parts = [f"## {suite.name}"]
    if suite.description:
        parts.append(suite.description.strip())
    seeds = max((r["seeds"] for r in rows), default=1)
    parts.append(
        "Per test user (one task: support = the user's other ratings in the state, query = 10 items): MAE and RMSE "
        "of the rating head, nDCG@1/@3 of the query ranking by predicted rating (gain = true rating), AUC of the "
        "like head (rating ≥ 4; users whose query has one class are left out, `AUC n` counts the rest). "
        f"Mean ± 95% CI over users{f' of the per-user mean over {seeds} seeds' if seeds > 1 else ''}. "
        + (f"ΔMAE: paired difference to `{suite.reference}` over the same users (negative = lower error; paired "
           "t-test p)." if suite.reference else ""))
    header = ["state", "method", "users", "MAE", "RMSE", "nDCG@1", "nDCG@3", "AUC", "AUC n", "ΔMAE vs ref", "fit s"]
    body = []
    for r in rows:
        d = "—"
        if r["paired"].startswith("refused"):
            d = "refused (users differ)"
        elif not math.isnan(r["d_mae"]):
            d = f"{r['d_mae']:+.3f} ± {r['d_mae_ci95']:.3f} (p={r['p_value']:.2g})"
        body.append([r["state"], r["method"], r["users"], *(_cell(r[k], r[f"{k}_ci95"]) for k in RATING_METRICS),
                     r["auc_users"], d, f"{r['fit_s']:.0f}"])
    parts.append("**Measured**\n\n" + markdown_table(header, body))
    if suite.reported:
        rep = [[r.get("state", ""), r["method"], r.get("metric", "mae").upper(), f"{float(r['value']):.2f}", r["source"]]
               for r in suite.reported]
        parts.append("**Reported** (copied from the cited paper, not measured here; a different dataset)\n\n"
                     + markdown_table(["state", "method", "metric", "value", "source"], rep))
    ft = _filter_table(results)
    if ft:
        parts.append("**Filtering** (counted, never silent)\n\n" + ft)
    refused = [r["paired"] for r in rows if r["paired"].startswith("refused")]
    if refused:
        parts.append("Refused pairings:\n" + "\n".join(f"- {m}" for m in refused))
    return "\n\n".join(parts) + "\n"
