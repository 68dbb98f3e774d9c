"""The run path of the cold-start rating family (a recommender from ``RECOMMENDERS``).

``run_rating_experiment(cfg)``: family (interactions + four-state split) → frozen text encoder →
item text embeddings (cached by the :class:`FeatureStore`) → feature table → data module →
recommender → Lightning Trainer (fit, then test the final weights on every test user) →
:class:`~metarec.training.RunResult` whose episodes are per-user records (state, MAE, RMSE,
nDCG@1/3, AUC) and whose ``info`` carries the filter report. :func:`metarec.training.run_experiment`
dispatches here when ``cfg.algorithm.name`` is a recommender.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

import metarec.recsys.recommenders  # noqa: F401  (registers recommenders)
from metarec.recsys.datamodule import ColdStartDataModule
from metarec.recsys.family import ColdStartFamily
from metarec.episode import episode_set_fingerprint
from metarec.log import get_logger
from metarec.models.features import FeatureStore
from metarec.registry import RECOMMENDERS

log = get_logger(__name__)


def run_rating_experiment(cfg: DictConfig, run_dir: Path, ckpt_path: Optional[str] = None, fit: bool = True) -> Any:
    from metarec.training import RunResult, _kwargs, build_encoder, build_family, build_trainer

    if cfg.get("threads"):
        # The MeLU network is tiny: extra intra-op threads only add synchronisation (on a shared
        # 2-core CPU, 2 threads made a meta-step 5x slower than 1).
        torch.set_num_threads(int(cfg.threads))
    family = build_family(cfg)
    if not isinstance(family, ColdStartFamily):
        raise ValueError(f"recommender {cfg.algorithm.name!r} needs a rating family (family=coldstart_ml100k), "
                         f"got family {cfg.family.name!r}")
    encoder = build_encoder(cfg)
    if encoder.freeze.value != "frozen":
        raise ValueError(f"the cold-start family embeds item texts with a frozen encoder; got encoder.freeze="
                         f"{encoder.freeze.value!r} (use encoder.freeze=frozen)")
    cache_dir = cfg.features.cache_dir if cfg.features.get("cache_dir") else None
    texts = family.item_texts
    store = FeatureStore(encoder, texts, kind="embedding", cache_dir=cache_dir,
                         batch_size=int(cfg.features.get("batch_size", 64)))
    table = family.feature_table(store(torch.arange(len(texts))))
    dm = ColdStartDataModule(family, table, meta_batch_size=int(cfg.episodes.meta_batch_size),
                             max_steps=int(cfg.trainer.max_steps), seed=int(cfg.seed))
    model = RECOMMENDERS.create(cfg.algorithm.name, schema=table.schema(), train_stats=family.train_stats(),
                                like_threshold=family.like_threshold, max_steps=int(cfg.trainer.max_steps),
                                **_kwargs(cfg.algorithm))
    atomic_json(run_dir / "filter_report.json", family.filter_report)

    # No validation set (see ColdStartDataModule): keep last.ckpt, test the final weights.
    ckpt = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0)
    trainer = build_trainer(cfg, run_dir, callbacks=[ckpt], checkpoint=False, limit_val_batches=0,
                            enable_checkpointing=True)
    fit_s = 0.0
    do_fit = fit and model.trains and cfg.trainer.max_steps > 0 and ckpt_path is None
    last: Optional[str] = None
    if do_fit:
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.get("resume_from"))
        fit_s = time.perf_counter() - t0
        last = ckpt.last_model_path or None
    t0 = time.perf_counter()
    trainer.test(model, datamodule=dm, ckpt_path=ckpt_path, verbose=False)
    test_s = time.perf_counter() - t0
    records = sorted(model.test_records, key=lambda r: r["index"])
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    return RunResult(
        metrics=metrics, episodes=records, episode_set=episode_set_fingerprint([r["fingerprint"] for r in records]),
        run_dir=str(run_dir), best_checkpoint=ckpt_path or last, fit_seconds=fit_s, test_seconds=test_s,
        trained=do_fit, info={"filter_report": family.filter_report},
    )


def atomic_json(path: Path, obj: Any) -> None:
    from metarec.bench.store import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str))

