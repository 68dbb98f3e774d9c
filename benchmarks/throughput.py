"""Throughput: metarec vs a minimal hand-written PyTorch + learn2learn loop, on identical episodes.

For ProtoNet, MAML (second order) and FOMAML with the MiniLM encoder under the freeze policies
frozen (MAML-family: head only), top_k=1, top_k=2 and full, measures meta-training episodes/s of

  (a) a minimal loop: tokenized episodes -> HF model -> pooling -> loss -> Adam (learn2learn MAML);
  (b) metarec through the Lightning Trainer, without caches (token inputs);
  (c) metarec with its caches (hidden states below the trainable layers, or pooled embeddings
      of a frozen encoder);

and prints b/a (framework overhead; target >= 0.95) and c/a (what caching buys; target >= 10 for
top-1). Also the peak RSS of each run and the share of (a)'s step time spent in the encoder's
forward + backward (the practical limit of any framework).

    python benchmarks/throughput.py                 # full grid (about 15-25 minutes on 2 cores)
    python benchmarks/throughput.py --quick         # ProtoNet + FOMAML, frozen and top_k=1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import learn2learn as l2l  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from metarec.bench.runner import PeakMemory  # noqa: E402
from metarec.signals import run_script  # noqa: E402
from metarec.config import compose  # noqa: E402
from metarec.data.datamodule import EpisodicDataModule  # noqa: E402
from metarec.evaluation.tables import markdown_table  # noqa: E402
from metarec.models.encoder import mean_pool, minilm_encoder  # noqa: E402
from metarec.models.features import FeatureStore  # noqa: E402
from metarec.models.heads import class_means  # noqa: E402
from metarec.registry import ALGORITHMS, FAMILIES  # noqa: E402
from metarec.training import build_trainer  # noqa: E402


class _Timer(L.Callback):
    """Wall time from the end of the first (warm-up) step to the end of the last."""

    def __init__(self) -> None:
        self.t: list[float] = []

    def on_train_batch_end(self, *args) -> None:  # noqa: ANN002
        self.t.append(time.perf_counter())


def _policy(top_k: int | None) -> dict:
    if top_k is None:
        return {"freeze": "full"}
    return {"freeze": "frozen"} if top_k == 0 else {"freeze": "top_k", "top_k": top_k}


def _policy_name(top_k: int | None) -> str:
    return "full" if top_k is None else "frozen" if top_k == 0 else f"top_k={top_k}"


def _episodes(family, n_way, n_shot, n_query, steps, seed):  # noqa: ANN001
    from metarec.data.sampler import EpisodeSampler, EpisodeSpec

    s = EpisodeSampler(family, "train", EpisodeSpec(n_way, n_shot, n_query), seed)
    return [s.sample(i) for i in range(steps)]


def plain_loop(algo: str, top_k: int | None, family, episodes, args) -> dict:  # noqa: ANN001
    """(a): what a researcher would write by hand with transformers + learn2learn."""
    torch.manual_seed(0)
    enc = minilm_encoder(max_length=args.max_length, **_policy(top_k))
    model, tok = enc.model, enc.tokenizer
    model.train()
    head = torch.nn.Linear(model.config.hidden_size, args.n_way)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    texts = family.corpus.texts
    if algo == "protonet":
        params = [p for p in model.parameters() if p.requires_grad]
        learner = None
    else:
        learner = l2l.algorithms.MAML(torch.nn.ModuleDict({"model": model, "head": head}), lr=0.01,
                                      first_order=algo == "fomaml", allow_nograd=True)
        params = [p for p in learner.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-5)

    def embed(m, rows):  # noqa: ANN001
        b = tok([texts[i] for i in rows.tolist()], padding=True, truncation=True, max_length=args.max_length,
                return_tensors="pt")
        return mean_pool(m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state,
                         b["attention_mask"])

    stamps, enc_time = [], 0.0
    with PeakMemory() as mem:
        for e in episodes:
            t0 = time.perf_counter()
            opt.zero_grad()
            if learner is None:
                z = embed(model, torch.cat([e.support_idx, e.query_idx]))
                s, q = z[: len(e.support_idx)], z[len(e.support_idx):]
                logits = -torch.cdist(q, class_means(s, e.support_y, args.n_way)).pow(2)
                loss = F.cross_entropy(logits, e.query_y)
            else:
                clone = learner.clone()
                for _ in range(args.inner_steps):
                    clone.adapt(F.cross_entropy(clone.module["head"](embed(clone.module["model"], e.support_idx)), e.support_y))
                loss = F.cross_entropy(clone.module["head"](embed(clone.module["model"], e.query_idx)), e.query_y)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            stamps.append(time.perf_counter())
            if len(stamps) > 1:
                enc_time += (t1 - t0) + (t2 - t1)  # forward (incl. inner loop) + backward: all encoder
    n = len(stamps) - 1
    total = stamps[-1] - stamps[0]
    return {"eps": n / total, "enc_share": enc_time / total, "peak_mb": mem.peak_rss_mb}


def metarec_run(algo: str, top_k: int | None, family, args, cached: bool) -> dict:  # noqa: ANN001
    """(b) / (c): the same episodes through metarec's DataModule, algorithm and Lightning Trainer."""
    torch.manual_seed(0)
    enc = minilm_encoder(max_length=args.max_length, **_policy(top_k))
    t0 = time.perf_counter()
    features = FeatureStore(enc, family.corpus.texts, kind=None if cached else "tokens", cache_dir=args.cache_dir)
    build_s = time.perf_counter() - t0
    steps = args.steps
    dm = EpisodicDataModule(family, features, n_way=args.n_way, n_shot=args.n_shot, n_query=args.n_query,
                            meta_batch_size=1, max_steps=steps, seed=args.seed, val_episodes=1, test_episodes=1)
    cfg = compose([f"algorithm={algo}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                   "trainer.enable_progress_bar=false", f"trainer.precision={args.precision}"])
    kw = {k: v for k, v in cfg.algorithm.items() if k != "name"}
    if algo != "protonet":
        kw.update(inner_lr=0.01, inner_steps=args.inner_steps)
    model = ALGORITHMS.create(algo, encoder=enc, n_way=args.n_way, max_steps=steps, **kw)
    timer = _Timer()
    trainer = build_trainer(cfg, Path(args.out) / "runs", callbacks=[timer], checkpoint=False, logger=False,
                            limit_val_batches=0)
    with PeakMemory() as mem:
        trainer.fit(model, datamodule=dm)
    n = len(timer.t) - 1
    return {"eps": n / (timer.t[-1] - timer.t[0]), "peak_mb": mem.peak_rss_mb, "cache_build_s": build_s}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=8, help="meta-training episodes per measurement (+1 warm-up)")
    p.add_argument("--n-way", dest="n_way", type=int, default=5)
    p.add_argument("--n-shot", dest="n_shot", type=int, default=2)
    p.add_argument("--n-query", dest="n_query", type=int, default=4)
    p.add_argument("--inner-steps", dest="inner_steps", type=int, default=1)
    p.add_argument("--max-length", dest="max_length", type=int, default=64)
    p.add_argument("--precision", default="32-true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", dest="cache_dir", default=None)
    p.add_argument("--out", default="runs/throughput")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    family = FAMILIES.create("synthetic_category")
    episodes = _episodes(family, args.n_way, args.n_shot, args.n_query, args.steps + 1, args.seed)
    args.steps += 1
    algos = ["protonet", "fomaml"] if args.quick else ["protonet", "maml", "fomaml"]
    policies = [0, 1] if args.quick else [0, 1, 2, None]
    rows, records = [], []
    for algo in algos:
        for k in policies:
            if algo == "protonet" and k == 0:
                continue  # a frozen ProtoNet has nothing to train
            name = _policy_name(k)
            print(f"measuring {algo} {name} ...", file=sys.stderr, flush=True)
            a = plain_loop(algo, k, family, episodes, args)
            b = metarec_run(algo, k, family, args, cached=False)
            c = metarec_run(algo, k, family, args, cached=True) if k is not None else None
            rec = {"algorithm": algo, "policy": name, "a": a, "b": b, "c": c}
            records.append(rec)
            rows.append([algo, name, f"{a['eps']:.2f}", f"{b['eps']:.2f}", f"{c['eps']:.2f}" if c else "—",
                         f"{b['eps'] / a['eps']:.2f}", f"{c['eps'] / a['eps']:.1f}" if c else "—",
                         f"{100 * a['enc_share']:.0f}%", f"{a['peak_mb']:.0f} / {b['peak_mb']:.0f} / "
                         + (f"{c['peak_mb']:.0f}" if c else "—"), f"{c['cache_build_s']:.0f}" if c else "—"])
    print(f"\nMeta-training throughput, MiniLM, {args.n_way}-way {args.n_shot}-shot {args.n_query}-query, "
          f"max_length {args.max_length}, {args.precision}, {torch.get_num_threads()} threads, "
          f"{args.steps - 1} timed episodes after 1 warm-up (episodes/s)\n")
    print(markdown_table(["algorithm", "policy", "(a) plain", "(b) metarec", "(c) cached", "b/a", "c/a",
                          "encoder share (a)", "peak MB a / b / c", "cache build s"], rows))
    (Path(args.out) / "throughput.json").write_text(json.dumps({"args": vars(args), "results": records}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
