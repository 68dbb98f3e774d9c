"""From a composed config to a trained and tested model: ``run_experiment(cfg)``, every run's entry.

It picks the run path registered (:data:`~metarec.registry.RUNNERS`) for the method's kind. The
text-classification path, :func:`run_episodic`, lives here: it builds family → encoder → feature
store → data module → algorithm → Lightning Trainer, fits (unless the algorithm has no
meta-training), tests the best checkpoint on the fixed test episodes and returns a
:class:`~metarec.runtime.RunResult`. What run paths share is in :mod:`metarec.runtime`.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import lightning as L
from omegaconf import DictConfig, OmegaConf

import metarec.algorithms  # noqa: F401  (registers algorithms)
import metarec.data  # noqa: F401  (registers families)
import metarec.recsys  # noqa: F401  (registers the cold-start family, the recommenders and their run path)
from metarec.algorithms.base import MetaLearner
from metarec.data.datamodule import EpisodicDataModule
from metarec.data.family import TaskFamily
from metarec.episode import episode_set_fingerprint
from metarec.log import get_logger
from metarec.models.encoder import TextEncoder
from metarec.models.features import FeatureStore
from metarec.registry import ALGORITHMS, RUNNERS, method_kind
from metarec.checkpoint import CheckpointError, verify_checkpoint
from metarec.config import ConfigError
from metarec.rundir import RunDirLock, check_run_dir, is_rank_zero
from metarec.runtime import (  # noqa: F401  (build_trainer & co. stay importable from here)
    RunResult,
    accumulate_grad_batches,
    build_encoder,
    build_family,
    build_loggers,
    build_trainer,
    config_kwargs,
    feature_options,
    fit_model,
    test_model,
)

from metarec.validate import algorithm_class, validate_config

log = get_logger(__name__)


def _trains(cfg: DictConfig, ckpt_path: Optional[str], fit: bool) -> bool:
    """Whether this run fits weights: a fit, of an algorithm with meta-training, for at least one step."""
    fitting = fit and ckpt_path is None
    return fitting and getattr(algorithm_class(cfg), "trains", True) and int(cfg.trainer.max_steps) > 0


def check_run(cfg: DictConfig, ckpt_path: Optional[str] = None, fit: bool = True) -> Optional[dict]:
    """Everything a run checks before any work that does not need its ``run_dir``; the part of
    :func:`open_run` before the lock, for tools that test a checkpoint without writing a run
    (``benchmarks/head_ceiling.py``).

    In order: the config (:func:`metarec.validate.validate_config`); the checkpoint to test
    (``ckpt_path``) or resume from (``resume_from``): checksum and identity
    (:mod:`metarec.checkpoint`), and for a resume, that it holds a training state and steps are left
    below ``trainer.max_steps``.

    Returns:
        the checkpoint ``ckpt_path``, loaded and verified; ``None`` without one.

    Raises:
        ConfigError, CheckpointError: one line each.
    """
    fitting = fit and ckpt_path is None
    validate_config(cfg, fitting=fitting)
    resume = cfg.get("resume_from")
    ckpt = verify_checkpoint(ckpt_path, cfg) if ckpt_path else None
    if resume and _trains(cfg, ckpt_path, fit):
        resumed = verify_checkpoint(resume, cfg)
        if "optimizer_states" not in resumed:
            raise ConfigError(f"resume_from={resume} holds weights only, no training state (a weight soup, "
                              f"benchmarks/soup.py): a run cannot resume from it; test it with `metarec test {resume}`")
        step = int(resumed.get("global_step", 0))
        if step >= int(cfg.trainer.max_steps):
            raise ConfigError(f"resume_from={resume} is at step {step} and trainer.max_steps={cfg.trainer.max_steps}: "
                              "nothing is left to train; raise trainer.max_steps, or test the checkpoint with "
                              f"`metarec test {resume}`")
        log.info("resuming from %s at step %d of %d", resume, step, cfg.trainer.max_steps)
    elif resume and fitting:
        log.warning("resume_from=%s is ignored: algorithm %s has no meta-training", resume, cfg.algorithm.name)
    return ckpt


@contextmanager
def open_run(cfg: DictConfig, run_dir: Path, ckpt_path: Optional[str] = None, fit: bool = True) -> Iterator[None]:
    """Everything checked before a run does any work, and ``run_dir`` held while it runs.

    In order: :func:`check_run` (the config, then the checkpoint to test or resume from); then the
    lock on ``run_dir`` and, for a fit, that the directory holds no other run
    (:func:`metarec.rundir.check_run_dir`). An OS error without a path (a full disk) is given
    ``run_dir`` as its path.

    Raises:
        ConfigError, CheckpointError, RunDirError: one line each, before any work.
    """
    check_run(cfg, ckpt_path, fit)
    trains = _trains(cfg, ckpt_path, fit)
    resume = cfg.get("resume_from")
    if not is_rank_zero():  # DDP workers write into rank 0's directory
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunDirLock(run_dir)
    lock.acquire()
    try:
        if trains:
            check_run_dir(run_dir, resume, bool(cfg.get("overwrite", False)))
        yield
    except OSError as e:
        if e.errno is not None and e.filename is None:  # e.g. ENOSPC from a write: say where the run writes
            raise OSError(e.errno, f"{e.strerror or e} (while writing under run_dir)", str(run_dir)) from e
        raise
    finally:
        lock.release()


def build_features(cfg: DictConfig, encoder: TextEncoder, family: TaskFamily) -> FeatureStore:
    kind = None if cfg.features.cache else "tokens"
    return FeatureStore(encoder, family.corpus.texts, kind=kind, **feature_options(cfg))


def build_datamodule(cfg: DictConfig, family: TaskFamily, features: FeatureStore) -> EpisodicDataModule:
    e = cfg.episodes
    return EpisodicDataModule(
        family, features, n_way=e.n_way, n_shot=e.n_shot, n_query=e.n_query,
        meta_batch_size=e.meta_batch_size, max_steps=cfg.trainer.max_steps, seed=cfg.seed,
        eval_seed=e.eval_seed, val_episodes=e.val_episodes, test_episodes=e.test_episodes,
        accumulate=accumulate_grad_batches(cfg),
        task_weights=OmegaConf.to_container(e.task_weights) if e.get("task_weights") else None,
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
                             max_steps=cfg.trainer.max_steps, **config_kwargs(cfg.algorithm))


@RUNNERS.register(ALGORITHMS.kind)
def run_episodic(cfg: DictConfig, run_dir: Path, ckpt_path: Optional[str] = None, fit: bool = True,
                 test: bool = True, callbacks: Sequence[L.Callback] = (),
                 family: Optional[TaskFamily] = None) -> RunResult:
    """The run path of a text algorithm: fits, then tests the best checkpoint on the fixed test episodes.

    Args:
        test: ``False`` (tuning) never builds the test split: the result's metrics are the best
            ``val/acc`` of the fit (or one validation of an algorithm without meta-training).
        callbacks: extra Lightning callbacks of the fit (e.g. a tuning trial's pruning callback).
        family: the family ``cfg.family`` builds, when the caller already has it (tuning trials
            share one: loading ARSC takes ~20 s); families are never modified by a run.
    """
    family = family or build_family(cfg)
    encoder = build_encoder(cfg)
    features = build_features(cfg, encoder, family)
    dm = build_datamodule(cfg, family, features)
    model = build_algorithm(cfg, encoder)

    trainer = build_trainer(cfg, run_dir, callbacks=callbacks)
    trained, fit_s = fit_model(cfg, trainer, model, dm, ckpt_path=ckpt_path, fit=fit)
    best = (getattr(trainer.checkpoint_callback, "best_model_path", None) or None) if trained else None
    if not test:
        return _validation_result(trainer, model, dm, run_dir, best, fit_s, trained)
    test_ckpt = ckpt_path or best
    if cfg.trainer.get("fast_dev_run", False):
        test_ckpt = None
    metrics, records, test_s = test_model(trainer, model, dm, test_ckpt)
    return RunResult(
        metrics=metrics, episodes=records,
        episode_set=episode_set_fingerprint([r["fingerprint"] for r in records]),
        run_dir=str(run_dir), best_checkpoint=test_ckpt, fit_seconds=fit_s, test_seconds=test_s,
        label_map=dict(family.corpus.label_map), trained=trained,
    )


def _validation_result(trainer: L.Trainer, model: MetaLearner, dm: EpisodicDataModule, run_dir: Path,
                       best: Optional[str], fit_s: float, trained: bool) -> RunResult:
    """The result of a fit without test: the best validation accuracy (what tuning maximizes)."""
    score = getattr(trainer.checkpoint_callback, "best_model_score", None) if trained else None
    if score is None:  # no meta-training (or no validation ran): validate the model as it is
        trainer.validate(model, datamodule=dm, verbose=False)
        score = trainer.callback_metrics["val/acc"]
    return RunResult(metrics={"val/acc": float(score)}, episodes=[], episode_set="", run_dir=str(run_dir),
                     best_checkpoint=best, fit_seconds=fit_s, test_seconds=0.0,
                     label_map=dict(dm.family.corpus.label_map), trained=trained)


def run_experiment(cfg: DictConfig, run_dir: Optional[Path] = None, ckpt_path: Optional[str] = None,
                   fit: bool = True, test: bool = True, callbacks: Sequence[L.Callback] = (),
                   family: Optional[TaskFamily] = None) -> RunResult:
    """Fits (when the method trains and ``fit``) and tests one configured experiment.

    The run path is the one registered in :data:`~metarec.registry.RUNNERS` for the kind of
    registry that holds ``algorithm.name``: :func:`run_episodic` for a text algorithm,
    :func:`metarec.recsys.run.run_rating_experiment` for a recommender.
    """
    kind = method_kind(cfg.algorithm.name)
    runner = RUNNERS.get(kind)
    extra: dict = {}
    if kind == ALGORITHMS.kind:
        extra = dict(test=test, callbacks=callbacks, family=family)
    else:
        if accumulate_grad_batches(cfg) != 1:
            # The other run paths' data modules are not checked for accumulation equivalence.
            raise ValueError(f"trainer.accumulate_grad_batches={cfg.trainer.accumulate_grad_batches} is not supported "
                             f"by {cfg.algorithm.name!r} ({kind}); raise episodes.meta_batch_size instead")
        if not test or callbacks or family is not None:
            raise ValueError(f"{cfg.algorithm.name!r} ({kind}): a fit without test (tuning), extra callbacks or a "
                             "given family are supported for text algorithms only")
    run_dir = Path(run_dir or cfg.run_dir or Path("runs") / cfg.name)
    # Before any work: config validated, checkpoints verified, run_dir locked and checked.
    with open_run(cfg, run_dir, ckpt_path=ckpt_path, fit=fit):
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        try:
            return runner(cfg, run_dir, ckpt_path=ckpt_path, fit=fit, **extra)
        except CheckpointError as e:
            # Raised where the file's name is not known (the algorithm's on_load_checkpoint): name it.
            loaded = ckpt_path or cfg.get("resume_from")
            if loaded and str(loaded) not in str(e):
                raise CheckpointError(f"{loaded}: {e}") from e
            raise
