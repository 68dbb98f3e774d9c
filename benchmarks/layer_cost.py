"""Layer cost: what one training chunk of the top ``k`` layers costs, for encoders of other sizes.

The ARSC recipe trains the top layers of its encoder on cached states of the frozen bottom, in
chunks of ``encoder.length_buckets`` (16 rows of up to 128 tokens). Whether a bigger encoder fits
the recipe's time budget is a question of that chunk's forward + backward, which this times
through metarec's own path (``TextEncoder.run_top``, as training runs it) on random states,
under bf16 autocast where this CPU has it native (as the recipe), reporting the median and its
ratio to the first encoder given:

    python benchmarks/layer_cost.py default:4 /path/to/all-mpnet-base-v2:2 /path/to/all-mpnet-base-v2:4

``PATH:K`` is an encoder directory (``default``: the embedded all-MiniLM-L6-v2) and the number of
trainable top layers. Only the time of the trained layers is measured: the state cache of the
frozen bottom (built once per corpus) is not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from metarec.signals import run_script  # noqa: E402
from metarec.evaluation.tables import markdown_table  # noqa: E402
from metarec.hardware import fast_bf16  # noqa: E402
from metarec.models.encoder import default_encoder_path, load_hf_encoder  # noqa: E402


def _spec(text: str) -> tuple[str, int]:
    path, sep, k = text.rpartition(":")
    if not sep or not k.isdigit() or int(k) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PATH:K with K >= 1 trainable layers, e.g. default:4")
    return (default_encoder_path() if path == "default" else path), int(k)


def chunk_seconds(path: str, k: int, rows: int, seq: int, reps: int, bf16: bool) -> tuple[list[float], int, int]:
    """Forward + backward times of ``rows`` x ``seq`` states through the top ``k`` layers (one
    warm-up call first); the encoder's layer count and hidden size."""
    enc = load_hf_encoder(path, freeze="top_k", top_k=k)
    enc.train()
    n_layers, width = len(enc.layers), int(enc.model.config.hidden_size)
    mask = torch.ones(rows, seq, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(reps + 1):
        hidden = torch.randn(rows, seq, width, generator=gen)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = enc.run_top(hidden, mask, bucket=False)
        z.float().square().mean().backward()
        if i:  # the first call picks and caches oneDNN's kernels
            times.append(time.perf_counter() - t)
        enc.zero_grad(set_to_none=True)
    return times, n_layers, width


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoders", nargs="+", type=_spec, metavar="PATH:K", help="encoder directory and trainable layers")
    p.add_argument("--rows", type=int, default=16, help="rows per chunk (the recipe: 256 rows in 16 buckets)")
    p.add_argument("--seq", type=int, default=128, help="tokens per row (the recipe's max_length)")
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args()
    for path, _ in args.encoders:
        if not os.path.isdir(path):
            p.error(f"encoder directory {path} does not exist")
    bf16 = fast_bf16()
    rows, first = [], None
    for path, k in args.encoders:
        times, n_layers, width = chunk_seconds(path, k, args.rows, args.seq, args.reps, bf16)
        med = statistics.median(times)
        first = first or med
        name = "all-MiniLM-L6-v2 (default)" if path == default_encoder_path() else os.path.basename(os.path.normpath(path))
        rows.append([name, f"top {k} of {n_layers}", width,
                     f"{med:.3f}", f"{min(times):.3f}–{max(times):.3f}", f"{med / first:.2f}"])
        print(f"layer_cost: {rows[-1][0]} top {k} done", file=sys.stderr, flush=True)
    print(f"{args.rows} rows x {args.seq} tokens per chunk, forward + backward, "
          f"{'bf16 autocast' if bf16 else 'fp32'}, median of {args.reps}, torch threads {torch.get_num_threads()}")
    print(markdown_table(["encoder", "trained layers", "hidden", "s / chunk", "range", "ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
