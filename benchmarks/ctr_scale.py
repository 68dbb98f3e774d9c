"""Scale of the ctr_coldstart family: peak memory and throughput of reading and splitting a click log.

Generates a RecBole atomic click log (``<rows>`` interactions of ``rows / 50`` users on
``rows / 100`` items with a power-law popularity, item release years, user ages, a 0/1 ``label``
field) in a temporary folder, then builds the family (streamed read + old/new item split + the
feature table with dummy text embeddings) and the test batch, and prints peak RSS (MB) above the
Python + torch baseline, and rows/s.

    python benchmarks/ctr_scale.py                    # 1M interactions
    python benchmarks/ctr_scale.py --rows 10000000    # how far one machine goes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from metarec.bench.runner import PeakMemory
from metarec.recsys.ctr.datamodule import test_batch
from metarec.recsys.ctr.family import CTRColdStartFamily


def generate(d: Path, rows: int, seed: int = 0) -> None:
    """Writes ``d/gen.inter``, ``d/gen.user``, ``d/gen.item`` (chunk-wise: the generator is not the bottleneck)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(rows // 50, 10), max(rows // 100, 10)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop /= pop.sum()
    with open(d / "gen.inter", "w") as f:
        f.write("user_id:token\titem_id:token\tlabel:float\ttimestamp:float\n")
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            u = rng.integers(n_users, size=n)
            i = rng.choice(n_items, size=n, p=pop)
            c = (rng.random(n) < 0.1 + 0.2 * (i % 3 == 0)).astype(int)
            t = 1_600_000_000 + rng.integers(0, 10_000_000, size=n)
            f.write("".join(f"u{a}\ti{b}\t{x}\t{y}\n" for a, b, x, y in zip(u, i, c, t)))
    (d / "gen.user").write_text("user_id:token\tage:token\n" + "".join(f"u{a}\t{18 + a % 50}\n" for a in range(n_users)))
    (d / "gen.item").write_text("item_id:token\ttitle:token_seq\trelease_year:token\n" + "".join(
        f"i{b}\tItem {b}\t{1990 + b % 10}\n" for b in range(n_items)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--k-shot", type=int, default=10)
    ap.add_argument("--generate-into", help=argparse.SUPPRESS)  # child process: only write the files
    args = ap.parse_args()
    if args.generate_into:
        generate(Path(args.generate_into), args.rows)
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        # A child process writes the log, so its memory does not count towards the family's peak.
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--generate-into", str(d)], check=True)
        gen_s = time.perf_counter() - t0
        base_mb = psutil.Process().memory_info().rss / 2**20  # interpreter + torch + metarec, before reading
        with PeakMemory(interval=0.01) as mem:
            t0 = time.perf_counter()
            fam = CTRColdStartFamily(data_dir=str(d), label_field="label", item_year_cut=1998, k_shot=args.k_shot,
                                     user_fields=["age"], item_fields=["release_year"], item_text_fields=["title"])
            build_s = time.perf_counter() - t0
            table = fam.feature_table(torch.zeros(fam.data.n_items, 384))
            batch = test_batch(fam, table)
            total_s = time.perf_counter() - t0
        out = {
            "rows": len(fam.data), "users": fam.data.n_users, "items": fam.data.n_items,
            "file_mb": round((d / "gen.inter").stat().st_size / 2**20, 1), "generate_s": round(gen_s, 1),
            "family_build_s": round(build_s, 2), "rows_per_s": round(len(fam.data) / build_s),
            "with_feature_table_and_test_batch_s": round(total_s, 2),
            "baseline_rss_mb": round(base_mb), "peak_rss_mb": round(mem.peak_rss_mb),
            "peak_above_baseline_mb": round(mem.peak_rss_mb - base_mb),
            "test_items": fam.split.report["test_items"], "test_rows": int(batch["user"].shape[0]),
            "train_rows": fam.split.report["train_rows"],
        }
    print(json.dumps(out, indent=1))
    print(f"peak MB {out['peak_rss_mb']} (baseline {out['baseline_rss_mb']}), "
          f"{out['rows_per_s']:,} rows/s over {out['rows']:,} rows")


if __name__ == "__main__":
    from metarec.signals import run_script

    sys.exit(run_script(main))
