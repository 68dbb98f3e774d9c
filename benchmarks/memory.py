"""Memory: peak RSS and step time of the ARSC recipe with its state cache in RAM vs memory-mapped.

Runs the same meta-training steps once per mode, each in its own process so that each has its own
peak resident memory: ``ram`` (``features.memory=ram``: the whole cache read into memory, the
one-backward step), ``mmap`` (``features.memory=mmap``: batches read their rows from the
memory-mapped cache file) and ``mmap+chunks`` (memory-mapped, and
``algorithm.backward_chunks=true``: each length chunk of a step back-propagated on its own, so
one chunk's activations are alive at a time; the multi-task stage only). Prints,
per mode, the process's peak RSS (the kernel's high-water mark, ``ru_maxrss``: it covers loading
the family, tokenizing, opening or building the cache and the steps; also the peak at the end of
that setup), the cache size, the median step time (wall, and CPU time of the process: steadier on
a shared machine), the time per step spent reading features (the only work that differs between
the modes), and each mode's ratios to the first mode. Targets (issue 20): peak RSS <= 4 GB
memory-mapped, step time within 10% of in-RAM.

Every mode's config is composed and checked as ``metarec fit`` checks it before the first run
starts: an unknown option, or a ``+chunks`` mode for an algorithm without ``backward_chunks``, is
one line naming it (exit status 2), not a traceback minutes later.

Build the cache first (a recipe run does, or the first mode here), so that both modes time the
same work: the build itself writes chunk by chunk and never holds the cache in memory.

    python benchmarks/memory.py                                 # ARSC development protocol, 60 steps, 3 modes
    python benchmarks/memory.py --steps 30 --repeats 2          # alternate the modes twice
    python benchmarks/memory.py --modes ram,mmap                # without chunked backward
    python benchmarks/memory.py --modes ram,mmap+chunks --chunk-buckets 8   # the one-backward step vs 8 chunks
    python benchmarks/memory.py experiment=quickstart/protonet encoder.freeze=top_k  # any config
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECIPE = ["experiment=arsc/multitask_dev"]
MODES = ("ram", "mmap", "mmap+chunks")


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def mode_config(args: argparse.Namespace, mode: str) -> DictConfig:
    """The composed config of one mode's run (checked by :func:`main` before any run starts).

    Raises:
        ConfigError: an override that names no config file or key.
    """
    from metarec.config import compose

    memory, _, chunks = mode.partition("+")
    overrides = [*args.overrides, f"trainer.max_steps={args.steps}", f"features.memory={memory}",
                 "trainer.enable_progress_bar=false", f"seed={args.seed}"]
    if chunks:
        overrides.append("++algorithm.backward_chunks=true")  # ++: the ARSC recipe already sets it
        if args.chunk_buckets:
            overrides.append(f"encoder.length_buckets={args.chunk_buckets}")
    cfg = compose(overrides)
    if not chunks and cfg.algorithm.get("backward_chunks"):  # ram / mmap: the one-backward step
        cfg = compose([*overrides, "algorithm.backward_chunks=false"])
    return cfg


def child(args: argparse.Namespace) -> dict:
    """One measured run (in its own process): build everything as ``metarec fit`` does, then fit."""
    import logging

    import lightning as L

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # progress lines

    from metarec.log import peak_rss_bytes
    from metarec.training import build_algorithm, build_datamodule, build_encoder, build_family, build_features, build_trainer

    class Timer(L.Callback):
        """Wall and CPU (all threads of this process) time at the end of every step."""

        def __init__(self) -> None:
            self.t: list[tuple[float, float]] = []

        def on_train_batch_end(self, *a: object) -> None:
            self.t.append((time.perf_counter(), time.process_time()))

    class TimedLookup:
        """The feature store, timing its lookups: the only work that differs between the two modes."""

        def __init__(self, store: object) -> None:
            self.store, self.seconds = store, 0.0

        def __call__(self, rows: object) -> object:
            t = time.perf_counter()
            out = self.store(rows)
            self.seconds += time.perf_counter() - t
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self.store, name)

    cfg = mode_config(args, args.memory)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    t0 = time.perf_counter()
    family = build_family(cfg)
    encoder = build_encoder(cfg)
    features = build_features(cfg, encoder, family)
    setup_s = time.perf_counter() - t0
    setup_peak = peak_rss_bytes()
    lookup = TimedLookup(features)
    dm = build_datamodule(cfg, family, lookup)  # type: ignore[arg-type]
    model = build_algorithm(cfg, encoder)
    timer = Timer()
    trainer = build_trainer(cfg, Path(args.out) / args.memory, callbacks=[timer], checkpoint=False, logger=False,
                            limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    steps = [b[0] - a[0] for a, b in zip(timer.t, timer.t[1:])]  # the first step (warm-up) is not timed
    cpu = [b[1] - a[1] for a, b in zip(timer.t, timer.t[1:])]
    path = features.cache_path()
    return {
        "memory": args.memory, "steps": len(steps), "step_s_median": statistics.median(steps),
        "step_s_mean": statistics.fmean(steps), "step_cpu_s_median": statistics.median(cpu),
        "lookup_s_per_step": lookup.seconds / (len(steps) + 1), "setup_s": setup_s, "cache_hits": features.cache_hits,
        "cache_bytes": _dir_size(path) if path is not None and path.exists() else 0, "texts": len(features),
        "peak_rss_bytes": peak_rss_bytes(), "peak_rss_setup_bytes": setup_peak,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help=f"config overrides (default: {' '.join(RECIPE)})")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run (+1 untimed warm-up)")
    p.add_argument("--repeats", type=int, default=1, help="ram/mmap pairs, alternated (medians reported)")
    p.add_argument("--modes", default=",".join(MODES), help=f"the modes to run, out of {','.join(MODES)} "
                   "(ratios are to the first)")
    p.add_argument("--chunk-buckets", type=int, help="encoder.length_buckets of the +chunks modes only (the "
                   "others keep the config's): compares today's step with a low-memory one in one run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/memory")
    p.add_argument("--memory", choices=MODES, help=argparse.SUPPRESS)  # set in the child processes
    args = p.parse_args()
    args.overrides = args.overrides or RECIPE
    if args.memory:  # a child: measure, print one JSON line
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    modes = args.modes.split(",")
    if not modes or set(modes) - set(MODES):
        p.error(f"--modes must list some of {','.join(MODES)}, got {args.modes!r}")
    from metarec.validate import validate_config

    for memory in modes:  # every mode's config checked, as `metarec fit` checks it, before the first run starts
        try:
            validate_config(mode_config(args, memory))
        except ValueError as e:
            print(f"benchmarks/memory.py: mode {memory} with {' '.join(args.overrides)}: {e}", file=sys.stderr)
            return 2
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for memory in modes:
            print(f"measuring {memory} ({args.steps} steps) ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, *args.overrides, f"--steps={args.steps + 1}", f"--seed={args.seed}",
                   f"--out={args.out}", f"--memory={memory}"]
            if args.chunk_buckets:
                cmd.append(f"--chunk-buckets={args.chunk_buckets}")
            from metarec.signals import communicate  # SIGTERM: passed on, the child unwinds first

            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            stdout, _ = communicate(proc)
            lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"the {memory} run failed (exit code {proc.returncode}); its output is above", file=sys.stderr)
                return 1
            runs[memory].append(json.loads(lines[-1][len("RESULT "):]))

    def med(memory: str, k: str) -> float:
        return statistics.median(r[k] for r in runs[memory])

    from metarec.evaluation.tables import markdown_table

    keys = [("peak_rss_bytes", 1e9, 2), ("peak_rss_setup_bytes", 1e9, 2), ("step_s_median", 1, 3),
            ("step_s_mean", 1, 3), ("step_cpu_s_median", 1, 3), ("lookup_s_per_step", 1, 4)]
    rows = [[m, *(f"{med(m, k) / scale:.{d}f}" for k, scale, d in keys), f"{med(m, 'setup_s'):.0f}"] for m in modes]
    for m in modes[1:]:
        rows.append([f"{m} / {modes[0]}", *(f"{med(m, k) / med(modes[0], k):.3f}" for k, _, _ in keys), ""])
    first = runs[modes[0]][0]
    extra = f"; +chunks modes with encoder.length_buckets={args.chunk_buckets}" if args.chunk_buckets else ""
    print(f"\n{' '.join(args.overrides)}{extra}: {first['texts']:,} texts, state cache {first['cache_bytes'] / 1e9:.3g} GB, "
          f"{args.steps} timed steps after 1 warm-up, {args.repeats} run(s) per mode, {os.cpu_count()} CPUs\n")
    print(markdown_table(["memory", "peak RSS GB", "peak after setup GB", "step s (median)", "step s (mean)",
                          "step CPU s (median)", "lookup s / step", "setup s (data + cache)"], rows))
    (Path(args.out) / "memory.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    from metarec.signals import run_script  # stdlib only at import: the parent stays light

    sys.exit(run_script(main))
