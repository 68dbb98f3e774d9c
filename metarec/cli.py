"""The ``metarec`` command.

    metarec fit   [OVERRIDES...]           train + test one experiment, e.g. experiment=quickstart/protonet
    metarec test  CKPT [OVERRIDES...]      test a checkpoint on the experiment's fixed test episodes
    metarec bench SUITE [--force] ...      run a benchmark suite (resumable) and print its table
    metarec tune  SUITE [--trials N] ...   equal-budget Optuna search per method on meta-validation (resumable)
    metarec list  [algorithms|recommenders|ctr|families|encoders|experiments]
    metarec arsc-dev-split DATA_DIR OUT    draw the ARSC development protocol's split file once

OVERRIDES are Hydra overrides of the config tree in metarec/configs/ (``trainer.max_steps=50``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_script_args(parser: argparse.ArgumentParser, argv: Sequence[str],
                      too_few: Optional[tuple[int, str]] = None) -> tuple[argparse.Namespace, list[str]]:
    """Parses a benchmark script's ``ARGS -- OVERRIDES``: its own arguments before ``--``, the
    config overrides of the runs after it (``benchmarks/vote.py``, ``soup.py``, ``head_ceiling.py``).

    Every checkpoint the parser reads into ``ckpts`` (a list) or ``ckpt`` must be a file, and
    ``too_few=(n, message)`` asks for at least ``n`` of them; otherwise ``parser.error`` (exit 2,
    one line naming the file).
    """
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    ckpts = list(getattr(args, "ckpts", None) or []) + ([args.ckpt] if getattr(args, "ckpt", None) else [])
    missing = [c for c in ckpts if not Path(c).is_file()]
    if missing:
        parser.error(f"checkpoint {missing[0]} does not exist")
    if too_few is not None and len(ckpts) < too_few[0]:
        parser.error(too_few[1])
    return args, argv[cut + 1:]


def _print_result(name: str, result) -> None:  # type: ignore[no-untyped-def]
    from metarec.evaluation.tables import format_acc

    from metarec.recsys.ctr.run import CTRRunResult
    from metarec.recsys.run import RatingRunResult

    m = result.metrics
    if isinstance(result, CTRRunResult):
        # Per-item click records (the cold-start CTR family): AUC and log-loss per warm-up phase.
        print(result.phase_table())
        print(f"{name}: {len(result.episodes)} test items (task set {result.episode_set}); run dir {result.run_dir}")
        return
    if isinstance(result, RatingRunResult):
        # Per-user rating records (the cold-start family): metrics per state.
        print(result.state_table())
        print(f"{name}: {len(result.episodes)} test users (task set {result.episode_set}); run dir {result.run_dir}")
        return
    tasks = [e["task"] for e in result.episodes]
    if tasks and len(set(tasks)) == len(tasks) and len(tasks) <= 100:
        # One episode per task (fixed-support protocols such as ARSC): the per-task table papers report.
        from metarec.evaluation.tables import per_task_table

        print(per_task_table(result.episodes))
    f1 = (f", macro-F1 {format_acc(m['test/f1'], m.get('test/f1_ci95', float('nan')))}" if "test/f1" in m else "")
    print(f"{name}: test accuracy {format_acc(m['test/acc'], m.get('test/acc_ci95', float('nan')))}{f1} "
          f"over {len(result.episodes)} episodes (episode set {result.episode_set}); run dir {result.run_dir}")


def _result_name(cfg) -> str:  # type: ignore[no-untyped-def]
    """The run's name, marked when it trained on the held-out tasks' labels (oracle) or its test read the
    unlabeled test queries (transductive): other protocols."""
    transductive = bool((cfg.get("algorithm") or {}).get("transductive", False))
    oracle = bool((cfg.get("family") or {}).get("oracle_heldout_train", False))
    marks = (["oracle: trained on the held-out domains' labelled .train files"] if oracle else []) + \
        (["transductive: the test queries were read, unlabeled"] if transductive else [])
    return f"{cfg.name} [{'; '.join(marks)}]" if marks else str(cfg.name)


def _print_reported(cfg) -> None:  # type: ignore[no-untyped-def]
    """Published rows an experiment config lists under ``reported`` (never measured here)."""
    rows = cfg.get("reported") or []
    if not rows:
        return
    protocol = (cfg.get("family") or {}).get("dev_split")
    print("reported (published, not measured here" + (f"; on the official targets, not this run's protocol: {protocol}"
                                                       if protocol else "") + "):")
    width = max(len(str(r["method"])) for r in rows)
    for r in rows:
        print(f"  {str(r['method']):<{width}}  {float(r['value']):6.2f}  {r.get('source', '')}")


def cmd_fit(args: argparse.Namespace) -> int:
    from metarec.config import compose
    from metarec.training import run_experiment

    cfg = compose(args.overrides)
    result = run_experiment(cfg)
    _print_result(_result_name(cfg), result)
    _print_reported(cfg)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from metarec.config import compose
    from metarec.training import run_experiment

    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        print(f"metarec: error: checkpoint {ckpt} does not exist", file=sys.stderr)
        return 2
    cfg = compose(args.overrides)
    result = run_experiment(cfg, ckpt_path=str(ckpt), run_dir=Path(cfg.run_dir or ckpt.parent.parent) / "test")
    _print_result(_result_name(cfg), result)
    _print_reported(cfg)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from metarec.bench.runner import run_suite

    return run_suite(Path(args.suite), store=Path(args.store) if args.store else None, force=args.force,
                     only=args.only, overrides=args.overrides, latex=args.latex, isolate=not args.in_process,
                     report_only=args.report_only)


def cmd_tune(args: argparse.Namespace) -> int:
    import optuna

    from metarec.bench.tune import run_tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # metarec logs each trial itself
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    md, _ = run_tune(Path(args.suite), store=Path(args.store) if args.store else None, storage=args.storage,
                     only=args.only, overrides=args.overrides, trials=args.trials, max_steps=args.steps,
                     test=not args.no_test, report_only=args.report_only)
    print(md)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    import metarec.algorithms  # noqa: F401
    import metarec.data  # noqa: F401
    import metarec.models  # noqa: F401
    from metarec.config import list_experiments
    from metarec.registry import ALGORITHMS, ENCODERS, FAMILIES

    from metarec.registry import CTR_METHODS, RECOMMENDERS
    import metarec.recsys  # noqa: F401  (registers the cold-start family and the recommenders)
    import metarec.recsys.ctr  # noqa: F401  (registers the ctr_coldstart family and the CTR methods)

    what = {"algorithms": ALGORITHMS.list, "recommenders": RECOMMENDERS.list, "ctr": CTR_METHODS.list,
            "families": FAMILIES.list, "encoders": ENCODERS.list, "experiments": list_experiments}
    for kind in [args.kind] if args.kind else list(what):
        print(f"{kind}: {', '.join(what[kind]())}")
    return 0


def cmd_arsc_dev_split(args: argparse.Namespace) -> int:
    from metarec.data.arsc import make_dev_split

    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"metarec: error: {out} exists (a committed split is drawn once; --force replaces it)", file=sys.stderr)
        return 2
    split = make_dev_split(args.data_dir, n_domains=args.n_domains, min_test=args.min_test, seed=args.seed)
    out.write_text(json.dumps(split, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: held-out domains {split['holdout_domains']}, {len(split['supports'])} tasks")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="metarec", description="Meta-learning benchmarks on e-commerce tasks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="train and test one experiment")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=quickstart/protonet seed=1")
    p.set_defaults(fn=cmd_fit)
    p = sub.add_parser("test", help="test a checkpoint")
    p.add_argument("ckpt")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=cmd_test)
    p = sub.add_parser("bench", help="run a benchmark suite and write its tables")
    p.add_argument("suite", help="a suite file, e.g. benchmarks/suites/quickstart.yaml")
    p.add_argument("--store", help="run store directory (default: runs/bench/<suite name>)")
    p.add_argument("--force", action="store_true", help="re-run finished cells")
    p.add_argument("--only", default=None, help="run only cells whose id contains this text")
    p.add_argument("--latex", action="store_true", help="also write a LaTeX table")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the store; run nothing")
    p.add_argument("--in-process", action="store_true",
                   help="run cells in this process (default: one process per cell, for exact peak memory)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides applied to every cell")
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("tune", help="tune every method of a suite on meta-validation (Optuna), test the winners")
    p.add_argument("suite", help="a suite file with a tune: block, e.g. benchmarks/suites/tune-arsc-dev.yaml")
    p.add_argument("--store", help="run store directory (default: runs/tune/<suite name>)")
    p.add_argument("--storage", help="Optuna RDB URL shared by several workers (default: sqlite:///<store>/tune.db)")
    p.add_argument("--trials", type=int, help="finished trials per study (overrides tune.trials)")
    p.add_argument("--steps", type=int, help="meta-training steps per trial (overrides tune.max_steps)")
    p.add_argument("--only", default=None, help="run only studies whose name contains this text")
    p.add_argument("--no-test", action="store_true", help="tune only; test the winners in a later run")
    p.add_argument("--report-only", action="store_true", help="rebuild report and plots from the studies; run nothing")
    p.add_argument("overrides", nargs="*", help="Hydra overrides applied to every trial")
    p.set_defaults(fn=cmd_tune)
    p = sub.add_parser("list", help="list registered names")
    p.add_argument("kind", nargs="?", choices=["algorithms", "recommenders", "ctr", "families", "encoders", "experiments"])
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("arsc-dev-split", help="draw the ARSC development protocol (held-out domains, fixed supports)")
    p.add_argument("data_dir")
    p.add_argument("out", help="e.g. metarec/configs/splits/arsc_dev.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-domains", type=int, default=4)
    p.add_argument("--min-test", type=int, default=100, help="least .test lines per threshold of a held-out domain")
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.set_defaults(fn=cmd_arsc_dev_split)
    args, extra = parser.parse_known_args(argv)
    # Hydra overrides may come after options (`bench SUITE --force seed=1`).
    bad = [a for a in extra if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = [*getattr(args, "overrides", []), *extra]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Lightning's start-up tips and known-harmless warnings would bury metarec's own output.
    for name in ("lightning.pytorch.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*transfer_batch_to_device.*", ".*LeafSpec.*", ".*smaller than the logging interval.*",
                    ".*module\\(s\\) in eval mode.*"):
        warnings.filterwarnings("ignore", message=pattern)
    from metarec.data.corpus import DataError
    from metarec.registry import UnknownNameError
    from metarec.signals import run_script

    try:
        return run_script(lambda: args.fn(args), prog="metarec")
    except (DataError, UnknownNameError, FileNotFoundError, ValueError) as e:
        # Bad input: one clear line, no traceback from deep inside a library.
        print(f"metarec: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # The machine said no (permissions, a full disk, a read-only file system): name the path.
        where = f": {e.filename}" if e.filename else ""
        print(f"metarec: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
