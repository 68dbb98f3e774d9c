"""Contract tests over the registry: every meta-trained algorithm learns on a toy family,
and every experiment config composes and runs with fast_dev_run."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import metarec.algorithms  # noqa: F401
from metarec.config import compose, list_experiments
from metarec.data.datamodule import EpisodicDataModule
from metarec.models.features import FeatureStore
from metarec.registry import ALGORITHMS
from metarec.training import build_trainer, run_experiment
from tests.conftest import tiny_encoder, toy_family

TRAINED = [n for n in ALGORITHMS.list() if ALGORITHMS.get(n).trains]


class _LossLog(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize("name", TRAINED)
def test_training_reduces_loss(name, tmp_path):
    torch.manual_seed(0)
    family = toy_family()
    enc = tiny_encoder(freeze="top_k", top_k=1, hidden_size=32)
    features = FeatureStore(enc, family.corpus.texts, cache_dir=False)
    steps = 40
    dm = EpisodicDataModule(family, features, n_way=2, n_shot=2, n_query=4, meta_batch_size=2, max_steps=steps,
                            val_episodes=2, test_episodes=4)
    cfg = compose([f"algorithm={name}", "encoder=tiny_bert", f"trainer.max_steps={steps}",
                   "trainer.val_check_interval=40", "trainer.enable_progress_bar=false"])
    kw = {k: v for k, v in cfg.algorithm.items() if k not in ("name", "search")}
    kw.update(outer_lr=3e-3, encoder_lr=3e-3, warmup_steps=0, lr_schedule="constant")
    model = ALGORITHMS.create(name, encoder=enc, n_way=2, max_steps=steps, **kw)
    log = _LossLog()
    trainer = build_trainer(cfg, tmp_path, callbacks=[log], logger=False, checkpoint=False)
    trainer.fit(model, datamodule=dm)
    assert len(log.losses) == steps
    first, last = sum(log.losses[:10]) / 10, sum(log.losses[-10:]) / 10
    assert last < first, f"{name}: loss did not decrease ({first:.3f} -> {last:.3f})"


@pytest.mark.parametrize("experiment", list_experiments())
def test_every_experiment_config_runs_with_fast_dev_run(experiment, tmp_path):
    overrides = [f"experiment={experiment}", "encoder.name=tiny_bert", "trainer.fast_dev_run=true",
                 "trainer.enable_progress_bar=false", "episodes.test_episodes=2", "episodes.val_episodes=2",
                 f"run_dir={tmp_path}"]
    cfg = compose(overrides)
    if cfg.encoder.top_k > 2:  # tiny_bert has 2 layers (the ARSC recipe trains MiniLM's top 4)
        cfg = compose([*overrides, "encoder.top_k=2"])
    res = run_experiment(cfg)
    assert 0.0 <= res.metrics["test/acc"] <= 1.0
    assert len(res.episodes) >= 1


def test_fit_then_test_from_checkpoint(tmp_path):
    over = ["encoder=tiny_bert", "family=synthetic_sentiment", "episodes.n_way=2", "trainer.max_steps=4",
            "trainer.val_check_interval=2", "episodes.val_episodes=2", "episodes.test_episodes=6",
            "trainer.enable_progress_bar=false", f"run_dir={tmp_path / 'fit'}"]
    fit = run_experiment(compose(over))
    assert fit.best_checkpoint and fit.best_checkpoint.endswith(".ckpt")
    again = run_experiment(compose(over[:-1] + [f"run_dir={tmp_path / 'test'}"]), ckpt_path=fit.best_checkpoint)
    assert again.episode_set == fit.episode_set
    assert again.metrics["test/acc"] == pytest.approx(fit.metrics["test/acc"])
    # Macro-F1 beside accuracy, per episode and as mean ± CI, equal after reloading too.
    assert all(0.0 <= e["f1"] <= 1.0 for e in fit.episodes) and "test/f1_ci95" in fit.metrics
    assert fit.metrics["test/f1"] == pytest.approx(sum(e["f1"] for e in fit.episodes) / len(fit.episodes))
    assert again.metrics["test/f1"] == pytest.approx(fit.metrics["test/f1"])
    assert not again.trained


def test_keep_checkpoints_keeps_every_validation(tmp_path):
    over = ["encoder=tiny_bert", "family=synthetic_sentiment", "episodes.n_way=2", "trainer.max_steps=6",
            "trainer.val_check_interval=2", "episodes.val_episodes=2", "episodes.test_episodes=2",
            "trainer.enable_progress_bar=false", "trainer.keep_checkpoints=-1", f"run_dir={tmp_path}"]
    res = run_experiment(compose(over))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", "val-2.ckpt", "val-4.ckpt", "val-6.ckpt"]
    assert res.best_checkpoint in [str(tmp_path / "checkpoints" / n) for n in names[1:]]
    with pytest.raises(ValueError, match="trainer.keep_checkpoints must be -1 .all. or >= 1, got 0"):
        build_trainer(compose(over[:-2] + ["trainer.keep_checkpoints=0"]), tmp_path)


@pytest.mark.parametrize("algorithm", ["protonet", "multitask_prior"])
def test_a_run_is_deterministic_for_its_seed(algorithm, tmp_path):
    """Same config and seed, two runs: the same trained weights and per-episode accuracies."""
    over = [f"algorithm={algorithm}", "encoder=tiny_bert", "+encoder.dropout=0.1", "family=synthetic_sentiment",
            "episodes.n_way=2", "trainer.max_steps=4", "trainer.val_check_interval=4", "episodes.val_episodes=2",
            "episodes.test_episodes=6", "trainer.precision=bf16-mixed", "trainer.enable_progress_bar=false"]
    runs = [run_experiment(compose(over + [f"run_dir={tmp_path / str(i)}"])) for i in range(2)]
    assert [e["acc"] for e in runs[0].episodes] == [e["acc"] for e in runs[1].episodes]
    weights = [torch.load(r.best_checkpoint, weights_only=False)["state_dict"] for r in runs]
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
