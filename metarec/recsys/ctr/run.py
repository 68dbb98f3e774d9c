"""The run path of the ``ctr_coldstart`` family (a method from ``CTR_METHODS``).

``run_ctr_experiment(cfg)``: family (streamed click log + old/new item split) → frozen text encoder
→ item text embeddings (cached by the :class:`FeatureStore`) → feature table → data module →
method → Lightning Trainer (``base_steps + meta_steps`` steps, then the test on every new item) →
:class:`CTRRunResult` with one record per test item (query clicks, probabilities per phase) and
the filter report in ``info``. It is registered in :data:`~metarec.registry.RUNNERS` for the
``CTR method`` kind: :func:`metarec.training.run_experiment` picks it for a CTR method.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from metarec.episode import episode_set_fingerprint
from metarec.files import atomic_write_text
from metarec.log import get_logger
from metarec.recsys.ctr.datamodule import CTRDataModule
from metarec.recsys.ctr.family import CTRColdStartFamily
from metarec.recsys.ctr.split import PHASES
from metarec.recsys.run import recsys_family
from metarec.registry import CTR_METHODS, RUNNERS
from metarec.runtime import RunResult, build_trainer, config_kwargs, refuse_unused_trainer_options, test_model

log = get_logger(__name__)


@dataclass
class CTRRunResult(RunResult):
    """A :class:`RunResult` whose episodes are per-item click records (they carry ``p_cold``)."""

    def phase_table(self) -> str:
        """AUC and log-loss of the pooled query impressions per warm-up phase."""
        from metarec.evaluation.tables import markdown_table

        m = self.metrics
        return markdown_table(["phase", "AUC", "log-loss"],
                              [[ph, f"{m[f'test/auc_{ph}']:.4f}", f"{m[f'test/logloss_{ph}']:.4f}"] for ph in PHASES])


@RUNNERS.register(CTR_METHODS.kind)
def run_ctr_experiment(cfg: DictConfig, run_dir: Path, ckpt_path: Optional[str] = None,
                       fit: bool = True) -> CTRRunResult:
    """Pre-trains, meta-trains (when the method does and ``fit``) and tests one CTR cold-start experiment."""
    if ckpt_path is not None:
        raise ValueError("the ctr_coldstart family has no separate test of a checkpoint: `metarec fit` trains "
                         "and tests in one run (pre-training is a few seconds)")
    # The training length is the method's (pre-training + meta-training steps), not trainer.max_steps,
    # and nothing is validated or checkpointed: the trainer options about those are refused, not ignored.
    refuse_unused_trainer_options(
        cfg, ("max_steps", "val_check_interval", "early_stopping.patience", "weight_averaging_start",
              "checkpoint_every_n_steps", "keep_checkpoints"),
        f"the ctr_coldstart family trains CTR method {cfg.algorithm.name!r} for its own steps (algorithm.base_steps + "
        "algorithm.meta_steps) with no validation and no checkpoint")
    family, table = recsys_family(cfg, CTRColdStartFamily, f"CTR method {cfg.algorithm.name!r} needs the "
                                  "ctr_coldstart family (family=ctr_ml100k)")
    model = CTR_METHODS.create(cfg.algorithm.name, schema=table.schema(), item_cat=table.item_cat,
                               item_multi=table.item_multi, item_text=table.item_text, train_ctr=family.train_ctr(),
                               **config_kwargs(cfg.algorithm))
    model.seed = int(cfg.seed)
    dm = CTRDataModule(family, table, base_steps=model.base_steps, meta_steps=model.meta_steps,
                       batch_size=int(cfg.episodes.batch_size), meta_batch_size=int(cfg.episodes.meta_batch_size),
                       seed=int(cfg.seed))
    atomic_write_text(run_dir / "filter_report.json", json.dumps(family.filter_report, indent=2, default=str))
    steps = model.total_steps
    trainer = build_trainer(cfg, run_dir, checkpoint=False, limit_val_batches=0, max_steps=max(steps, 1),
                            val_check_interval=max(steps, 1), enable_checkpointing=False)
    fit_s = 0.0
    trained = fit and model.trains and steps > 0
    if trained:
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        fit_s = time.perf_counter() - t0
    metrics, records, test_s = test_model(trainer, model, dm, None)
    log.info("%s: AUC per phase %s", cfg.algorithm.name, {ph: round(metrics[f"test/auc_{ph}"], 4) for ph in PHASES})
    return CTRRunResult(
        metrics=metrics, episodes=records, episode_set=episode_set_fingerprint([r["fingerprint"] for r in records]),
        run_dir=str(run_dir), best_checkpoint=None, fit_seconds=fit_s, test_seconds=test_s, trained=trained,
        info={"filter_report": family.filter_report},
    )
