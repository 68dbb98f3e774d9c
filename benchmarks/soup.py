"""Weight soup of several runs: averages their weights into one checkpoint and tests it as
`metarec test` does.

    python benchmarks/soup.py --out runs/soup_top4 runs/top4_b16/checkpoints/last.ckpt \
        runs/top4_b16_seed1/checkpoints/last.ckpt runs/top4_seed2/checkpoints/last.ckpt \
        -- experiment=arsc/multitask_dev encoder.top_k=4 encoder.length_buckets=16

Writes OUT/checkpoints/soup.ckpt (weights only, with metarec's checksum and the runs' identity;
`metarec test OUT/checkpoints/soup.ckpt ...` tests it again) and runs `metarec test` on it (its
table; its run in OUT/test unless the overrides set run_dir). A uniform soup
(metarec.evaluation.ensemble.weight_soup) costs the N trainings of its members and one model's
test. It is written once: an existing OUT/checkpoints/soup.ckpt is refused. The members must be
runs of one configuration (seeds): each is verified (checksum, identity) against the config
given after --, and the options are checked, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metarec.checkpoint import VerifiedCheckpointIO, run_identity, verify_checkpoint
from metarec.cli import main as metarec
from metarec.cli import parse_script_args
from metarec.signals import run_script
from metarec.config import compose
from metarec.evaluation.ensemble import weight_soup
from metarec.training import check_run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="%(prog)s --out DIR CKPT CKPT [CKPT ...] -- [config overrides]")
    p.add_argument("--out", required=True, type=Path, help="run directory of the soup (checkpoint and test)")
    p.add_argument("ckpts", nargs="+", help="checkpoints of runs of one experiment (e.g. seeds)")
    args, overrides = parse_script_args(p, sys.argv[1:], too_few=(2, "a soup needs at least two checkpoints"))
    soup_path = args.out / "checkpoints" / "soup.ckpt"
    if soup_path.exists():
        p.error(f"{soup_path} exists: give another --out, or test it with `metarec test {soup_path}`")
    try:  # the config and every member checked as `metarec test` checks them, before anything is written
        cfg = compose(overrides)
        members = [check_run(cfg, ckpt_path=args.ckpts[0], fit=False),
                   *(verify_checkpoint(c, cfg) for c in args.ckpts[1:])]
        soup = weight_soup(members, args.ckpts)
    except ValueError as e:  # config, checkpoint and soup errors: one line
        p.error(str(e))
    soup_path.parent.mkdir(parents=True, exist_ok=True)
    VerifiedCheckpointIO(run_identity(cfg)).save_checkpoint(soup, soup_path)
    print(f"soup of {len(args.ckpts)} checkpoints written to {soup_path}", flush=True)
    return metarec(["test", str(soup_path), *overrides])


if __name__ == "__main__":
    sys.exit(run_script(main))
