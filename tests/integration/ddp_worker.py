"""Runs N outer steps of an algorithm on the toy family, in 1 process or 2-rank DDP (gloo, CPU),
and saves the trainable parameters and the test-episode indices. Used by test_ddp.py.

    python tests/integration/ddp_worker.py ALGO DEVICES META_BATCH STEPS OUT.pt
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tests.conftest
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402

from metarec.config import compose  # noqa: E402
from metarec.data.datamodule import EpisodicDataModule  # noqa: E402
from metarec.models.features import FeatureStore  # noqa: E402
from metarec.registry import ALGORITHMS  # noqa: E402
from metarec.training import build_trainer  # noqa: E402
from tests.conftest import tiny_encoder, toy_family  # noqa: E402


def main() -> None:
    algo, devices, meta_batch, steps, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    L.seed_everything(0, verbose=False)
    family = toy_family()
    enc = tiny_encoder(freeze="top_k", top_k=1)
    # One memory-mapped cache on disk, built by the first run and read by both DDP ranks.
    features = FeatureStore(enc, family.corpus.texts, cache_dir=Path(out).parent / "feature-cache",
                            store_dtype=torch.float32, memory="mmap")
    dm = EpisodicDataModule(family, features, n_way=2, n_shot=2, n_query=3, meta_batch_size=meta_batch,
                            max_steps=steps, val_episodes=2, test_episodes=7)
    cfg = compose([f"algorithm={algo}", "encoder=tiny_bert", f"trainer.max_steps={steps}",
                   f"trainer.val_check_interval={steps}", "trainer.enable_progress_bar=false"])
    kw = {k: v for k, v in cfg.algorithm.items() if k not in ("name", "search")}
    kw.update(warmup_steps=0, lr_schedule="constant", outer_lr=0.5, encoder_lr=0.5, optimizer="sgd")
    model = ALGORITHMS.create(algo, encoder=enc, n_way=2, max_steps=steps, **kw)
    strategy = "ddp" if devices > 1 else "auto"
    trainer = build_trainer(cfg, Path(out).parent / f"run-{devices}", accelerator="cpu", devices=devices,
                            strategy=strategy, logger=False, checkpoint=False)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    if trainer.global_rank == 0:
        params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        torch.save({"params": params, "test_index": [r["index"] for r in model.test_records],
                    "test_acc": float(trainer.callback_metrics["test/acc"]),
                    "test_episodes": float(trainer.callback_metrics["test/episodes"])}, out)


if __name__ == "__main__":
    main()
