"""From a composed config to a trained and tested model: the one code path for every run.

``run_experiment(cfg)`` builds family → encoder → feature store → data module → algorithm →
Lightning Trainer, fits (unless the algorithm has no meta-training), tests the best
checkpoint on the fixed test episodes and returns a :class:`RunResult`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf

import metarec.algorithms  # noqa: F401  (registers algorithms)
import metarec.data  # noqa: F401  (registers families)
import metarec.recsys  # noqa: F401  (registers the cold-start family and the recommenders)
from metarec.algorithms.base import MetaLearner
from metarec.data.datamodule import EpisodicDataModule
from metarec.data.family import TaskFamily
from metarec.episode import episode_set_fingerprint
from metarec.evaluation.stats import mean_ci95
from metarec.log import get_logger
from metarec.models.encoder import TextEncoder
from metarec.models.features import FeatureStore
from metarec.registry import ALGORITHMS, ENCODERS, FAMILIES, RECOMMENDERS

log = get_logger(__name__)


def _kwargs(node: DictConfig, drop: tuple[str, ...] = ("name",)) -> dict[str, Any]:
    d = OmegaConf.to_container(node, resolve=True)
    assert isinstance(d, dict)
    return {k: v for k, v in d.items() if k not in drop}


def build_family(cfg: DictConfig) -> TaskFamily:
    return FAMILIES.create(cfg.family.name, **_kwargs(cfg.family))


def build_encoder(cfg: DictConfig) -> TextEncoder:
    return ENCODERS.create(cfg.encoder.name, **_kwargs(cfg.encoder))


def build_features(cfg: DictConfig, encoder: TextEncoder, family: TaskFamily) -> FeatureStore:
    kind = None if cfg.features.cache else "tokens"
    cache_dir = cfg.features.cache_dir if cfg.features.get("cache_dir") else None
    return FeatureStore(encoder, family.corpus.texts, kind=kind, cache_dir=cache_dir,
                        batch_size=int(cfg.features.get("batch_size", 64)),
                        autocast=bool(cfg.features.get("autocast", False)))


def build_datamodule(cfg: DictConfig, family: TaskFamily, features: FeatureStore) -> EpisodicDataModule:
    e = cfg.episodes
    return EpisodicDataModule(
        family, features, n_way=e.n_way, n_shot=e.n_shot, n_query=e.n_query,
        meta_batch_size=e.meta_batch_size, max_steps=cfg.trainer.max_steps, seed=cfg.seed,
        eval_seed=e.eval_seed, val_episodes=e.val_episodes, test_episodes=e.test_episodes,
    )


def build_algorithm(cfg: DictConfig, encoder: TextEncoder) -> MetaLearner:
    precision = str(cfg.trainer.precision)
    name = cfg.algorithm.name
    if precision.startswith("16") and name in ("maml", "metasgd") and not cfg.algorithm.get("first_order", False):
        raise ValueError(
            f"precision={precision} with second-order {name} gives NaN gradients (fp16 overflow in the "
            "inner autograd.grad, pytorch#64655); use trainer.precision=bf16-mixed, or algorithm=fomaml"
        )
    return ALGORITHMS.create(name, encoder=encoder, n_way=cfg.episodes.n_way,
                             max_steps=cfg.trainer.max_steps, **_kwargs(cfg.algorithm))


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    lc = cfg.logger
    if lc.get("wandb", False):
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_MODE", str(lc.get("wandb_mode", "offline")))
        loggers.append(WandbLogger(project=lc.get("wandb_project", "metarec"), save_dir=str(run_dir),
                                   group=lc.get("group"), name=lc.get("run_name") or cfg.name,
                                   tags=list(cfg.get("tags", [])), offline=lc.get("wandb_mode", "offline") == "offline"))
    return loggers


class BestAndLastCheckpoint(ModelCheckpoint):
    """ModelCheckpoint on ``val/acc`` whose ``last.ckpt`` is refreshed at every validation.

    Lightning 2.6 rewrites ``last.ckpt`` only when a new best checkpoint is saved, so after the
    best validation the "last" checkpoint silently stops moving and resuming from it loses every
    step since. Here it always holds the latest validated step (and the final step at the end).
    """

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self._should_skip_saving_checkpoint(trainer) or self._last_global_step_saved == trainer.global_step:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._refresh_last(trainer)


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback] = (), checkpoint: bool = True,
                  **overrides: Any) -> L.Trainer:
    """The Lightning Trainer of a config; ``checkpoint`` adds ModelCheckpoint on ``val/acc``.

    ``trainer.keep_checkpoints`` (default 1) is how many validated checkpoints stay on disk besides
    ``last.ckpt``: 1 keeps the best as ``best-<step>.ckpt``; ``-1`` keeps every validation's as
    ``val-<step>.ckpt`` (learning curves on the test tasks, snapshot ensembles), the best still
    being the one tested.
    """
    t = cfg.trainer
    cbs = list(callbacks)
    if checkpoint:
        keep = int(t.get("keep_checkpoints", 1))
        if keep == 0 or keep < -1:
            raise ValueError(f"trainer.keep_checkpoints must be -1 (all) or >= 1, got {keep}")
        cbs.append(BestAndLastCheckpoint(dirpath=str(run_dir / "checkpoints"), monitor="val/acc", mode="max",
                                         save_last=True, save_top_k=keep, auto_insert_metric_name=False,
                                         filename="best-{step}" if keep == 1 else "val-{step}"))
    kw: dict[str, Any] = dict(
        default_root_dir=str(run_dir),
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.get("num_nodes", 1),
        precision=t.precision, max_steps=t.max_steps, max_epochs=-1 if t.max_steps > 0 else 1,
        val_check_interval=min(t.val_check_interval, max(t.max_steps, 1)), check_val_every_n_epoch=None,
        num_sanity_val_steps=0, log_every_n_steps=t.log_every_n_steps, gradient_clip_val=t.get("gradient_clip_val"),
        enable_progress_bar=t.enable_progress_bar, enable_model_summary=False,
        # Episodes are sharded per rank by EpisodicDataModule; Lightning's sampler would reshuffle.
        use_distributed_sampler=False,
        # MAML adapts at validation/test time: gradients must be available there.
        inference_mode=False,
        callbacks=cbs, enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in cbs), logger=build_loggers(cfg, run_dir), deterministic=t.get("deterministic", False),
        fast_dev_run=t.get("fast_dev_run", False),
    )
    kw.update(overrides)
    return L.Trainer(**kw)


@dataclass
class RunResult:
    """What one experiment produced (all from this run)."""

    metrics: dict[str, float]
    episodes: list[dict[str, Any]]
    episode_set: str
    run_dir: str
    best_checkpoint: Optional[str]
    fit_seconds: float
    test_seconds: float
    label_map: dict[str, str] = field(default_factory=dict)
    trained: bool = True
    info: dict[str, Any] = field(default_factory=dict)  # family-specific extras (e.g. a filter report)


def run_experiment(cfg: DictConfig, run_dir: Optional[Path] = None, ckpt_path: Optional[str] = None,
                   fit: bool = True) -> RunResult:
    """Fits (when the algorithm trains and ``fit``) and tests one configured experiment."""
    run_dir = Path(run_dir or cfg.run_dir or Path("runs") / cfg.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.algorithm.name in RECOMMENDERS:
        from metarec.recsys.run import run_rating_experiment  # the cold-start rating family

        return run_rating_experiment(cfg, run_dir, ckpt_path=ckpt_path, fit=fit)
    family = build_family(cfg)
    encoder = build_encoder(cfg)
    features = build_features(cfg, encoder, family)
    dm = build_datamodule(cfg, family, features)
    model = build_algorithm(cfg, encoder)

    trainer = build_trainer(cfg, run_dir)
    fit_s = 0.0
    best: Optional[str] = None
    do_fit = fit and model.trains and cfg.trainer.max_steps > 0 and ckpt_path is None
    if do_fit:
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.get("resume_from"))
        fit_s = time.perf_counter() - t0
        cb = trainer.checkpoint_callback
        best = getattr(cb, "best_model_path", None) or None
    t0 = time.perf_counter()
    test_ckpt = ckpt_path or best
    if cfg.trainer.get("fast_dev_run", False):
        test_ckpt = None
    trainer.test(model, datamodule=dm, ckpt_path=test_ckpt, verbose=False)
    test_s = time.perf_counter() - t0
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    records = sorted(model.test_records, key=lambda r: r["index"])
    if trainer.world_size == 1 and records:
        mean, ci = mean_ci95([r["acc"] for r in records])
        metrics.update({"test/acc": mean, "test/acc_ci95": 0.0 if math.isnan(ci) else ci})
    return RunResult(
        metrics=metrics, episodes=records,
        episode_set=episode_set_fingerprint([r["fingerprint"] for r in records]),
        run_dir=str(run_dir), best_checkpoint=test_ckpt, fit_seconds=fit_s, test_seconds=test_s,
        label_map=dict(family.corpus.label_map), trained=do_fit,
    )
