"""Precision: is bf16 autocast fast on this machine? fp32 vs bf16 for the embedded MiniLM.

metarec's configs write ``precision: ${fast_bf16:bf16-mixed,32-true}`` (metarec/hardware.py):
bf16 is 2-3x faster where the CPU has native bf16 instructions (AVX-512 BF16 / AMX) and several
times *slower* where it is emulated (AVX2 only). This prints what the resolver decides here and
the two timings it is based on, so a researcher can check the choice on their own machine:

  * forward of the whole 6-layer encoder on a batch (what building the state cache does);
  * forward + backward of the top 2 layers on cached states (one ARSC-recipe training chunk).

    python benchmarks/precision.py                       # ~15 s on 2 cores with native bf16
    python benchmarks/precision.py --batch 64 --seq 64 --reps 3
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from metarec.evaluation.tables import markdown_table  # noqa: E402
from metarec.hardware import fast_bf16  # noqa: E402
from metarec.models.encoder import minilm_encoder  # noqa: E402


def _cpu() -> str:
    """The CPU's name and its bf16-relevant flags (Linux ``/proc/cpuinfo``)."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({' '.join(shown) or 'flags unknown'})"


def _run(layers, h: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    for layer in layers:
        out = layer(h)
        h = out[0] if isinstance(out, tuple) else out  # a tuple in older transformers
    return h


def _best_of(fn, reps: int) -> float:  # noqa: ANN001
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=64, help="tokens per row")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (the minimum is reported)")
    a = p.parse_args()

    torch.manual_seed(0)
    enc = minilm_encoder(freeze="full", max_length=a.seq)
    model = enc.model.train()
    ids = torch.randint(1000, model.config.vocab_size, (a.batch, a.seq))
    mask = torch.ones_like(ids)
    layers = model.encoder.layer
    with torch.no_grad():
        states = _run(layers[:-2], model.embeddings(input_ids=ids))

    def full_forward(bf16: bool) -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids, attention_mask=mask)

    def top2_step(bf16: bool) -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = _run(layers[-2:], states).float().mean(1).pow(2).mean()
        loss.backward()

    rows = []
    for name, fn in (("encoder forward (6 layers)", full_forward), ("top-2 forward + backward", top2_step)):
        fp32 = _best_of(lambda: fn(False), a.reps)
        bf16 = _best_of(lambda: fn(True), a.reps)
        rows.append([name, f"{fp32:.3f}", f"{bf16:.3f}", f"{fp32 / bf16:.2f}x"])
    print(f"{_cpu()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"MiniLM, batch {a.batch} x {a.seq} tokens, best of {a.reps}")
    print(f"native bf16 (metarec.hardware.fast_bf16): {fast_bf16()} -> "
          f"precision {'bf16-mixed' if fast_bf16() else '32-true'} in the quickstart and ARSC configs")
    print(markdown_table(["work", "fp32 s", "bf16 autocast s", "bf16 speed-up"], rows))


if __name__ == "__main__":
    main()
