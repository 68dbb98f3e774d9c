"""What every run path shares: config → family, encoder, Lightning Trainer; fit-then-test; RunResult.

A run path (:data:`metarec.registry.RUNNERS`) turns a composed config into a :class:`RunResult`:
the text-classification one in :mod:`metarec.training`, the cold-start rating one in
:mod:`metarec.recsys.run`. Both build on the functions here, so neither imports the other.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from metarec.callbacks import LastCheckpoint, UniformWeightAveraging
from metarec.checkpoint import VerifiedCheckpointIO, run_identity
from metarec.config import ConfigError, config_dir
from metarec.data.family import TaskFamily
from metarec.models.encoder import TextEncoder
from metarec.progress import LogProgress
from metarec.registry import ENCODERS, FAMILIES
from metarec.rundir import ResumableCSVLogger


def config_kwargs(node: DictConfig, drop: tuple[str, ...] = ("name", "search")) -> dict[str, Any]:
    """A config node as constructor keyword arguments, without the keys in ``drop`` (its registry name,
    and ``search``: an algorithm's tuning space, metarec/bench/space.py, never a constructor argument)."""
    d = OmegaConf.to_container(node, resolve=True)
    assert isinstance(d, dict)
    return {k: v for k, v in d.items() if k not in drop}


def build_family(cfg: DictConfig) -> TaskFamily:
    return FAMILIES.create(cfg.family.name, **config_kwargs(cfg.family))


def build_encoder(cfg: DictConfig) -> TextEncoder:
    return ENCODERS.create(cfg.encoder.name, **config_kwargs(cfg.encoder))


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    # Resuming appends to metrics.csv (Lightning's CSVLogger would delete the rows logged so far).
    loggers: list[Logger] = [ResumableCSVLogger(save_dir=str(run_dir), name="csv", version="",
                                                keep_rows=bool(cfg.get("resume_from")))]
    lc = cfg.logger
    if lc.get("wandb", False):
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_MODE", str(lc.get("wandb_mode", "offline")))
        loggers.append(WandbLogger(project=lc.get("wandb_project", "metarec"), save_dir=str(run_dir),
                                   group=lc.get("group"), name=lc.get("run_name") or cfg.name,
                                   tags=list(cfg.get("tags", [])), offline=lc.get("wandb_mode", "offline") == "offline"))
    return loggers


def accumulate_grad_batches(cfg: DictConfig) -> int:
    """``trainer.accumulate_grad_batches``, validated (an integer >= 1)."""
    k = cfg.trainer.get("accumulate_grad_batches", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"trainer.accumulate_grad_batches must be an integer >= 1, got {k!r}")
    return k


def weight_averaging_start(cfg: DictConfig) -> Optional[int]:
    """The first step averaged by ``trainer.weight_averaging_start`` (a fraction of ``max_steps`` in [0, 1)), or None."""
    f = cfg.trainer.get("weight_averaging_start")
    if f is None:
        return None
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
        raise ValueError(f"trainer.weight_averaging_start must be null or a fraction of trainer.max_steps in [0, 1), got {f!r}")
    if cfg.trainer.max_steps <= 0:
        raise ValueError("trainer.weight_averaging_start needs trainer.max_steps > 0 (it is a fraction of the steps)")
    return int(f * cfg.trainer.max_steps) + 1


def feature_options(cfg: DictConfig) -> dict[str, Any]:
    """The :class:`~metarec.models.features.FeatureStore` keywords that ``cfg.features`` sets (all but ``kind``)."""
    f = cfg.features
    return dict(cache_dir=f.cache_dir if f.get("cache_dir") else None, batch_size=int(f.get("batch_size", 64)),
                autocast=bool(f.get("autocast", False)), memory=f.get("memory"))


def refuse_unused_trainer_options(cfg: DictConfig, keys: Sequence[str], why: str) -> None:
    """Refuses each ``trainer.<key>`` of ``keys`` that is set away from ``trainer/default.yaml``: the run ignores it.

    Raises:
        ConfigError: naming the option, its value, why it is not used and the value to leave it at.
    """
    defaults = OmegaConf.load(config_dir() / "trainer" / "default.yaml")
    for key in keys:
        default = OmegaConf.select(defaults, key)
        value = OmegaConf.select(cfg.trainer, key)
        if value != default:
            shown = "null" if default is None else default
            raise ConfigError(f"trainer.{key}={value} is not used: {why}; leave it at {shown}")


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback] = (), checkpoint: bool = True,
                  **overrides: Any) -> L.Trainer:
    """The Lightning Trainer of a config; ``checkpoint`` adds ModelCheckpoint on ``val/acc`` and ``last.ckpt``.

    ``trainer.keep_checkpoints`` (default 1) is how many validated checkpoints stay on disk besides
    ``last.ckpt``: 1 keeps the best as ``best-<step>.ckpt``; ``-1`` keeps every validation's as
    ``val-<step>.ckpt`` (learning curves on the test tasks, snapshot ensembles), the best still
    being the one tested.
    """
    t = cfg.trainer
    cbs = [*callbacks, LogProgress()]  # progress lines in the log when stderr is not a terminal
    k = accumulate_grad_batches(cfg)
    es = t.get("early_stopping") or {}
    if es.get("patience") is not None:
        if int(es.patience) < 1 or float(es.get("min_delta", 0.0)) < 0:
            raise ValueError(f"trainer.early_stopping needs patience >= 1 and min_delta >= 0, got {dict(es)}")
        # check_on_train_epoch_end=False: check after each validation (an epoch is the whole run here).
        cbs.append(EarlyStopping(monitor="val/acc", mode="max", patience=int(es.patience),
                                 min_delta=float(es.get("min_delta", 0.0)), check_on_train_epoch_end=False))
    every = t.get("checkpoint_every_n_steps")
    start = weight_averaging_start(cfg)
    if start is not None:
        cbs.append(UniformWeightAveraging(start))
    if checkpoint:
        keep = int(t.get("keep_checkpoints", 1))
        if keep == 0 or keep < -1:
            raise ValueError(f"trainer.keep_checkpoints must be -1 (all) or >= 1, got {keep}")
        # last.ckpt is LastCheckpoint's, not save_last's: see metarec.callbacks for why.
        cbs.append(ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), monitor="val/acc", mode="max",
                                   save_top_k=keep, auto_insert_metric_name=False,
                                   filename="best-{step}" if keep == 1 else "val-{step}"))
        cbs.append(LastCheckpoint(run_dir / "checkpoints", every_n_steps=every))
    elif every is not None:
        raise ValueError("trainer.checkpoint_every_n_steps is not available here: this runner keeps its own "
                         "checkpoints (leave it null)")
    kw: dict[str, Any] = dict(
        default_root_dir=str(run_dir),
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.get("num_nodes", 1),
        precision=t.precision, max_steps=t.max_steps, max_epochs=-1 if t.max_steps > 0 else 1,
        # Lightning counts val_check_interval in batches; with accumulation a step is k batches.
        val_check_interval=min(t.val_check_interval, max(t.max_steps, 1)) * k, check_val_every_n_epoch=None,
        accumulate_grad_batches=k,
        num_sanity_val_steps=0, log_every_n_steps=t.log_every_n_steps, gradient_clip_val=t.get("gradient_clip_val"),
        enable_progress_bar=t.enable_progress_bar, enable_model_summary=False,
        # Episodes are sharded per rank by EpisodicDataModule; Lightning's sampler would reshuffle.
        use_distributed_sampler=False,
        # MAML adapts at validation/test time: gradients must be available there.
        inference_mode=False,
        callbacks=cbs, enable_checkpointing=any(isinstance(c, Checkpoint) for c in cbs), logger=build_loggers(cfg, run_dir), deterministic=t.get("deterministic", False),
        fast_dev_run=t.get("fast_dev_run", False),
        # Every checkpoint carries a checksum and the run's identity, verified on load (metarec/checkpoint.py).
        plugins=[VerifiedCheckpointIO(run_identity(cfg))],
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


def fit_model(cfg: DictConfig, trainer: L.Trainer, model: Any, datamodule: L.LightningDataModule,
              ckpt_path: Optional[str] = None, fit: bool = True) -> tuple[bool, float]:
    """Fits ``model`` unless told not to, it does not train, ``max_steps`` is 0 or a checkpoint is tested.

    ``resume_from`` in the config resumes the fit from that checkpoint.

    Returns:
        ``(trained, fit_seconds)``.
    """
    if not (fit and model.trains and cfg.trainer.max_steps > 0 and ckpt_path is None):
        return False, 0.0
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("resume_from"))
    return True, time.perf_counter() - t0


def test_model(trainer: L.Trainer, model: Any, datamodule: L.LightningDataModule,
               ckpt_path: Optional[str]) -> tuple[dict[str, float], list[dict[str, Any]], float]:
    """Tests ``model`` (the weights of ``ckpt_path``, else the ones in memory) on the fixed test episodes.

    Returns:
        ``(metrics, records, test_seconds)``: every ``test/*`` value logged, with the model's own
        :attr:`~metarec.learner.EpisodeLearner.test_metrics` (exact floats, computed once from the
        records of all ranks) in place of their logged copies; the per-episode records by index.
    """
    t0 = time.perf_counter()
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    test_s = time.perf_counter() - t0
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    metrics.update(model.test_metrics)
    return metrics, sorted(model.test_records, key=lambda r: r["index"]), test_s

