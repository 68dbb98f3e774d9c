"""Per rating threshold: mean accuracy and macro-F1 of each method of a suite over the ARSC tasks
that share a threshold (t2: 1-2 vs 3-5 stars, t4: 1-3 vs 4-5, t5: 1-4 vs 5), read from a run store.

    python benchmarks/by_threshold.py benchmarks/suites/arsc-compare.yaml            # store runs/bench/arsc-compare
    python benchmarks/by_threshold.py benchmarks/suites/quickstart.yaml --family arsc_dev

Nothing is re-run: the numbers are the per-task records (episodes.jsonl) of finished cells.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from metarec.bench.report import collect
from metarec.bench.store import RunStore
from metarec.bench.suite import config_hash, load_suite
from metarec.evaluation.tables import markdown_table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite")
    p.add_argument("--store", help="run store (default: runs/bench/<suite name>)")
    p.add_argument("--family", default="arsc_dev", help="the suite's family whose tasks end in .t2/.t4/.t5")
    args = p.parse_args()
    suite = load_suite(Path(args.suite))
    store = RunStore(Path(args.store or Path("runs") / "bench" / suite.name))
    cells = [c for c in suite.cells([]) if c.family == args.family]
    if not cells:
        p.error(f"suite {args.suite} has no family {args.family!r}")
    results = collect(store, [(c, config_hash(c.config())) for c in cells])
    if not results:
        print(f"no finished cell of {args.family} in {store.root}", file=sys.stderr)
        return 1
    thresholds = sorted({e["task"].rsplit(".", 1)[-1] for r in results for e in r.episodes})
    rows = []
    for r in results:
        by: dict[str, list[dict]] = defaultdict(list)
        for e in r.episodes:
            by[e["task"].rsplit(".", 1)[-1]].append(e)
        cells_ = [f"{100 * sum(e[m] for e in by[t]) / len(by[t]):.1f}" for t in thresholds for m in ("acc", "f1")]
        rows.append([r.cell.method, *cells_])
    header = ["method", *(f"{t} {name}" for t in thresholds for name in ("acc", "F1"))]
    print(f"{args.family}: mean over the tasks of each threshold (seed {results[0].cell.seed}), store {store.root}\n")
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
