"""Seed ensemble by majority vote: tests each checkpoint on the same fixed test episodes, as
`metarec test` does, and scores the per-query majority of their predicted labels.

    python benchmarks/vote.py runs/lm_seed0_c16/checkpoints/last.ckpt runs/lm_seed1/checkpoints/last.ckpt \
        runs/lm_seed2/checkpoints/last.ckpt -- experiment=arsc/multitask_dev

Prints one table: each member's accuracy per task and the vote's (mean ± 95% CI over tasks, as
`metarec fit` prints). The vote is hard (metarec.evaluation.ensemble): test records keep each
query's predicted label, not its probabilities. An ensemble of N runs costs N trainings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metarec.cli import parse_script_args
from metarec.signals import run_script
from metarec.config import compose
from metarec.evaluation.ensemble import majority_vote
from metarec.evaluation.stats import mean_ci95
from metarec.evaluation.tables import markdown_table
from metarec.training import run_experiment


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="%(prog)s CKPT CKPT [CKPT ...] -- [config overrides]")
    p.add_argument("ckpts", nargs="+", help="checkpoints of runs of one experiment (e.g. seeds)")
    args, overrides = parse_script_args(p, sys.argv[1:], too_few=(2, "a vote needs at least two checkpoints"))
    try:  # run_experiment checks options and checkpoint before any work: one line, as from `metarec test`
        cfg = compose(overrides)
        members = [run_experiment(cfg, ckpt_path=c, run_dir=Path(c).parent.parent / "test").episodes
                   for c in args.ckpts]
    except ValueError as e:
        p.error(str(e))
    try:
        votes = majority_vote(members)
    except ValueError as e:
        print(f"vote.py: error: {e}", file=sys.stderr)
        return 1
    columns = [*members, votes]
    rows = [[v["task"], len(v["query_y"]), *(f"{100 * m[i]['acc']:.1f}" for m in columns)] for i, v in enumerate(votes)]
    for key, name in (("acc", "mean accuracy over tasks"), ("f1", "mean macro-F1 over tasks")):
        stats = [mean_ci95([r[key] for r in m]) for m in columns]
        rows.append([name, sum(len(v["query_y"]) for v in votes), *(f"{100 * a:.1f} ± {100 * ci:.1f}" for a, ci in stats)])
    header = ["task", "queries", *(f"member {k}" for k in range(len(members))), f"vote of {len(members)}"]
    print("\n".join(f"member {k}: {c}" for k, c in enumerate(args.ckpts)))
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
