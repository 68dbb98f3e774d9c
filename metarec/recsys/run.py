"""The run path of the cold-start rating family (a recommender from ``RECOMMENDERS``).

``run_rating_experiment(cfg)``: family (interactions + four-state split) → frozen text encoder →
item text embeddings (cached by the :class:`FeatureStore`) → feature table → data module →
recommender → Lightning Trainer (fit, then test on every test user: the final weights, or with
validation users (``family.split.val_users``) the best on ``val/acc``, as the text runs do) →
:class:`RatingRunResult` whose episodes are per-user records (state, MAE, RMSE, nDCG@1/3, AUC) and
whose ``info`` carries the filter report. It is registered in :data:`~metarec.registry.RUNNERS`
for the ``recommender`` kind: :func:`metarec.training.run_experiment` picks it for a recommender.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from metarec.episode import episode_set_fingerprint
from metarec.files import atomic_write_text
from metarec.log import get_logger
from metarec.models.features import FeatureStore
from metarec.recsys.datamodule import ColdStartDataModule
from metarec.recsys.family import ColdStartFamily, FeatureTable
from metarec.recsys.metrics import state_table
from metarec.registry import RECOMMENDERS, RUNNERS
from metarec.runtime import (RunResult, build_encoder, build_family, build_trainer, config_kwargs, feature_options,
                             fit_model, refuse_unused_trainer_options, test_model)

log = get_logger(__name__)


@dataclass
class RatingRunResult(RunResult):
    """A :class:`RunResult` whose episodes are per-user rating records (they carry ``state``)."""

    def state_table(self) -> str:
        """The per-state metrics table of the test users (mean ± 95% CI over users)."""
        return state_table(self.episodes)


def item_feature_table(cfg: DictConfig, family: Any) -> FeatureTable:
    """The family's feature table with its item texts embedded by the config's frozen encoder.

    Cached like the text families' states (``features.cache``, ``cache_dir``, ``autocast``, ``memory``);
    ``features.cache=false`` computes them for this run only, in memory.

    Args:
        family: a recommendation family with ``item_texts`` and ``feature_table(item_text)`` (the
            ``coldstart`` and ``ctr_coldstart`` families).

    Raises:
        ValueError: the encoder is not frozen.
    """
    encoder = build_encoder(cfg)
    if encoder.freeze.value != "frozen":
        raise ValueError(f"the {cfg.family.name} family embeds item texts with a frozen encoder; got "
                         f"encoder.freeze={encoder.freeze.value!r} (use encoder.freeze=frozen)")
    options = feature_options(cfg)
    if not cfg.features.get("cache", True):  # computed for this run and kept in memory, no file written
        options.update(cache_dir=False, memory="ram")
    texts = family.item_texts
    store = FeatureStore(encoder, texts, kind="embedding", **options)
    return family.feature_table(store(torch.arange(len(texts))))


def recsys_family(cfg: DictConfig, family_type: type, needs: str) -> tuple[Any, FeatureTable]:
    """The config's family, checked to be a ``family_type``, and its item feature table.

    Also applies ``cfg.threads``: the recommendation networks are tiny, so extra intra-op threads
    only add synchronisation (on a shared 2-core CPU, 2 threads made a MeLU meta-step 5x slower than 1).

    Raises:
        ValueError: ``needs, got family <name>`` when the family is of another kind.
    """
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    family = build_family(cfg)
    if not isinstance(family, family_type):
        raise ValueError(f"{needs}, got family {cfg.family.name!r}")
    return family, item_feature_table(cfg, family)


@RUNNERS.register(RECOMMENDERS.kind)
def run_rating_experiment(cfg: DictConfig, run_dir: Path, ckpt_path: Optional[str] = None,
                          fit: bool = True) -> RatingRunResult:
    """Fits (when the recommender trains and ``fit``) and tests one cold-start experiment."""
    family, table = recsys_family(cfg, ColdStartFamily, f"recommender {cfg.algorithm.name!r} needs a rating "
                                  "family (family=coldstart_ml100k)")
    dm = ColdStartDataModule(family, table, meta_batch_size=int(cfg.episodes.meta_batch_size),
                             max_steps=int(cfg.trainer.max_steps), seed=int(cfg.seed))
    model = RECOMMENDERS.create(cfg.algorithm.name, schema=table.schema(), train_stats=family.train_stats(),
                                like_threshold=family.like_threshold, max_steps=int(cfg.trainer.max_steps),
                                **config_kwargs(cfg.algorithm))
    atomic_write_text(run_dir / "filter_report.json", json.dumps(family.filter_report, indent=2, default=str))

    if family.split.val:
        # Validation users: the shared trainer (ModelCheckpoint / EarlyStopping on val/acc); test the best.
        trainer = build_trainer(cfg, run_dir)
        trained, fit_s = fit_model(cfg, trainer, model, dm, ckpt_path=ckpt_path, fit=fit)
        last = (getattr(trainer.checkpoint_callback, "best_model_path", None) or None) if trained else None
        test_ckpt = ckpt_path or last
    else:
        # No validation set (MeLU has none): keep last.ckpt, test the final weights.
        refuse_unused_trainer_options(cfg, ("early_stopping.patience", "keep_checkpoints"),
                                      "this split has no validation users, so the final weights are tested")
        ckpt = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0)
        trainer = build_trainer(cfg, run_dir, callbacks=[ckpt], checkpoint=False, limit_val_batches=0,
                                enable_checkpointing=True)
        trained, fit_s = fit_model(cfg, trainer, model, dm, ckpt_path=ckpt_path, fit=fit)
        last = (ckpt.last_model_path or None) if trained else None
        test_ckpt = ckpt_path
    metrics, records, test_s = test_model(trainer, model, dm, test_ckpt)
    return RatingRunResult(
        metrics=metrics, episodes=records, episode_set=episode_set_fingerprint([r["fingerprint"] for r in records]),
        run_dir=str(run_dir), best_checkpoint=ckpt_path or last, fit_seconds=fit_s, test_seconds=test_s,
        trained=trained, info={"filter_report": family.filter_report},
    )
