"""``metarec bench SUITE``: run every unfinished cell of a suite, then write its tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import OmegaConf
from tqdm.auto import tqdm

from metarec.bench.report import collect, write_reports
from metarec.bench.store import RunStore, atomic_write_text, environment
from metarec.bench.suite import Cell, config_hash, load_suite
from metarec.log import get_logger
from metarec.signals import communicate, run_script

log = get_logger(__name__)


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 50 ms), in MB;
    on CUDA also the peak allocated GPU memory."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_rss_mb = 0.0
        self.peak_cuda_mb: Optional[float] = None
        self._stop = threading.Event()

    def _poll(self) -> None:
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, proc.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        self._stop.set()
        self._thread.join()
        if torch.cuda.is_available():
            self.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20


def run_cell(cell: Cell, store: RunStore, key: str, suite_name: str, force: bool = False) -> dict[str, Any]:
    """Runs one cell into its store directory and returns its result record."""
    from metarec.training import run_experiment

    cfg = cell.config()
    d = store.prepare(key, force=force)
    cfg.run_dir = str(d)
    cfg.logger.group = suite_name
    cfg.logger.run_name = cell.id
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        res = run_experiment(cfg, run_dir=d)
    wall = time.perf_counter() - t0
    adapt = [e["adapt_s"] for e in res.episodes]
    record = {
        "cell": cell.id, "method": cell.method, "family": cell.family, "n_way": int(cfg.episodes.n_way),
        "n_shot": cell.n_shot, "seed": cell.seed, "config_hash": key, "metrics": res.metrics,
        "episode_set": res.episode_set, "n_episodes": len(res.episodes),
        "adapt_s_per_episode": sum(adapt) / max(len(adapt), 1), "fit_seconds": res.fit_seconds,
        "test_seconds": res.test_seconds, "wall_seconds": wall, "peak_rss_mb": mem.peak_rss_mb,
        "peak_cuda_mb": mem.peak_cuda_mb, "checkpoint": res.best_checkpoint, "trained": res.trained,
        "label_map": res.label_map, "overrides": cell.overrides, "pid": os.getpid(), **res.info,
    }
    store.write(key, record, res.episodes, OmegaConf.to_yaml(cfg), environment())
    return record


def die_with_parent() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` that makes a child process die (SIGTERM) when its parent dies.

    Linux only (``prctl(PR_SET_PDEATHSIG)`` through ctypes); elsewhere ``None``. Without it a
    killed ``metarec bench`` leaves its cell worker running, and a rerun runs the same cell
    alongside the orphan.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def one_line(e: BaseException) -> str:
    """An exception as one line: metarec's own errors as they are, others with their type."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {text}"


def run_cell_subprocess(cell: Cell, store: RunStore, key: str, suite_name: str, force: bool = False) -> dict[str, Any]:
    """Runs one cell in a fresh Python process, so its peak memory is its own (not the suite's).

    The worker dies with this process (:func:`die_with_parent`).
    """
    spec = json.dumps({"cell": [cell.method, cell.family, cell.n_shot, cell.seed, cell.overrides],
                       "store": str(store.root), "key": key, "suite": suite_name, "force": force})
    proc = subprocess.Popen([sys.executable, "-m", "metarec.bench.runner", spec], preexec_fn=die_with_parent())
    communicate(proc)  # SIGTERM: passed on, the worker unwinds (its cache's temporary files) first
    if proc.returncode != 0:
        error = store.failure(key)
        raise CellFailed(error or f"cell {cell.id} failed (exit {proc.returncode}); see its output above")
    rec = store.load(key)
    if rec is None:
        raise CellFailed(f"cell {cell.id} exited without writing {store.cell_dir(key) / 'result.json'}")
    return rec


class CellFailed(RuntimeError):
    """A cell's worker process failed; the message is its recorded one-line error."""

    def __str__(self) -> str:
        return str(self.args[0])


def run_suite(path: Path, store: Optional[Path] = None, force: bool = False, only: Optional[str] = None,
              overrides: Sequence[str] = (), latex: bool = False, report_only: bool = False,
              isolate: bool = True) -> int:
    """Runs the suite's unfinished cells (all with ``force``), prints and writes the report.

    Args:
        isolate: run every cell in its own process (exact per-cell peak memory); ``False`` runs
            them in this process (faster start-up, memory high-water marks then accumulate).
    """
    suite = load_suite(path)
    rs = RunStore(store or Path("runs") / "bench" / suite.name)
    cells = suite.cells(list(overrides))
    if only:
        cells = [c for c in cells if only in c.id]
        if not cells:
            raise ValueError(f"--only {only!r} matches no cell of {path}")
    keyed = [(c, config_hash(c.config())) for c in cells]
    todo = [(c, k) for c, k in keyed if force or not rs.finished(k)]
    log.info("suite %s: %d cells, %d finished, %d to run; store %s", suite.name, len(keyed),
             len(keyed) - len(todo), len(todo), rs.root)
    if not report_only:
        bar = tqdm(todo, desc=f"suite {suite.name}", unit="cell", position=0, leave=True, disable=None)
        for cell, key in bar:
            bar.set_postfix_str(cell.id)
            try:
                rec = (run_cell_subprocess if isolate else run_cell)(cell, rs, key, suite.name, force=force)
            except Exception as e:  # one broken cell must not stop the suite: record it, go on
                error = str(e) if isinstance(e, CellFailed) else one_line(e)
                if not isinstance(e, CellFailed):
                    rs.write_failure(key, cell.id, error, traceback.format_exc())
                tqdm.write(f"[{suite.name}] {cell.id}: FAILED: {error}")
                sys.stdout.flush()  # block-buffered when redirected: the line must reach the log now
                continue
            m = rec["metrics"]
            score = (f"new/existing MAE {m['test/new/existing/mae']:.3f}" if "test/new/existing/mae" in m
                     else f"AUC cold {m['test/auc_cold']:.4f}, after c {m['test/auc_c']:.4f}" if "test/auc_c" in m
                     else f"acc {100 * m['test/acc']:.1f}")
            tqdm.write(f"[{suite.name}] {cell.id}: {score} ({rec['wall_seconds']:.0f} s)")
            sys.stdout.flush()
    results = collect(rs, keyed)
    failed = [(c.id, err) for c, k in keyed if (err := rs.failure(k)) is not None]
    if results:
        md, files = write_reports(suite, rs, results, latex=latex)
    else:
        md, files = f"## {suite.name}\n\nNo cell has a result.", [rs.root / "report.md"]
    if failed:
        md += "\n\n### Failed cells\n\n" + "\n".join(f"- `{cid}`: FAILED: {err}" for cid, err in failed) + "\n"
    atomic_write_text(rs.root / "report.md", md)
    print()
    print(md)
    print("written: " + ", ".join(str(f) for f in files))
    missing = len(keyed) - len(results) - len(failed)
    if missing:
        log.warning("%d cells have no result yet", missing)
    if failed:
        print(f"metarec: error: {len(failed)} of {len(keyed)} cells failed ({', '.join(c for c, _ in failed)}); "
              f"listed in {rs.root / 'report.md'}", file=sys.stderr)
        return 1
    return 0


def _cell_main(spec_json: str) -> int:
    """Entry point of :func:`run_cell_subprocess` (``python -m metarec.bench.runner SPEC``)."""
    import logging
    import warnings

    spec = json.loads(spec_json)
    method, family, n_shot, seed, overrides = spec["cell"]
    # Warnings only, but the progress lines of long phases (cache build, fit, test) too, tagged
    # with the cell: in a suite redirected to a file they are the only sign of life for hours.
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(levelname)s [{method}/{family}/{n_shot}shot/seed{seed}] %(name)s: %(message)s")
    logging.getLogger("metarec.progress").setLevel(logging.INFO)
    logging.getLogger("metarec.models.features").setLevel(logging.INFO)
    for name in ("lightning.pytorch.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    cell, store = Cell(method, family, n_shot, seed, overrides), RunStore(Path(spec["store"]))
    try:
        run_cell(cell, store, spec["key"], spec["suite"], force=spec["force"])
    except Exception as e:  # recorded for the parent (failed.json) and shown as one line
        store.write_failure(spec["key"], cell.id, one_line(e), traceback.format_exc())
        print(f"metarec: error: cell {cell.id}: {one_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_script(lambda: _cell_main(sys.argv[1]), prog="metarec bench cell"))
