"""``algorithm.backward_chunks``: the multi-task stage back-propagating each length chunk on its
own (peak memory of one chunk) trains the same model as one backward over the whole step, and
refuses the trainer options that Lightning's manual optimization cannot honour."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import metarec.algorithms  # noqa: F401
from metarec.config import compose
from metarec.data.datamodule import EpisodicDataModule
from metarec.models.features import FeatureStore
from metarec.registry import ALGORITHMS
from metarec.training import build_trainer, config_kwargs
from tests.conftest import tiny_encoder, toy_family


def _fit(tmp_path, chunks: bool, steps: int = 3, accumulate: int = 1, algo: str = "multitask_prior",
         softmax: str = "episode", **extra: float) -> tuple[dict[str, torch.Tensor], list[float]]:
    L.seed_everything(0, verbose=False)
    family = toy_family()
    # dropout: both paths must draw the same masks (the same chunks forwarded in the same order)
    enc = tiny_encoder(freeze="top_k", top_k=1, dropout=0.1, length_buckets=3)
    features = FeatureStore(enc, family.corpus.texts, cache_dir=False, store_dtype=torch.float32)
    dm = EpisodicDataModule(family, features, n_way=2, n_shot=2, n_query=3, meta_batch_size=2,
                            max_steps=steps, val_episodes=2, test_episodes=2, accumulate=accumulate)
    cfg = compose([f"algorithm={algo}", "encoder=tiny_bert", f"trainer.max_steps={steps}",
                   f"trainer.val_check_interval={steps}", "trainer.enable_progress_bar=false",
                   f"trainer.accumulate_grad_batches={accumulate}"])
    kw = config_kwargs(cfg.algorithm)
    kw.update(warmup_steps=1, backward_chunks=chunks, train_softmax=softmax, **extra)
    model = ALGORITHMS.create(algo, encoder=enc, n_way=2, max_steps=steps, **kw)
    lrs: list[float] = []  # after each step

    class LR(L.Callback):
        def on_train_batch_end(self, trainer, *args):  # noqa: ANN001, ANN002
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = build_trainer(cfg, tmp_path / f"run-{chunks}", accelerator="cpu", logger=False, checkpoint=False,
                            callbacks=[LR()])
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == steps
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, lrs


@pytest.mark.parametrize("algo,softmax,extra", [("multitask_prior", "episode", {}), ("baseline", "all", {}),
                                                ("multitask_prior", "episode", {"loo_weight": 1.0})])
def test_chunked_backward_trains_the_same_model(algo, softmax, extra, tmp_path):
    whole, lr_whole = _fit(tmp_path / "whole", chunks=False, algo=algo, softmax=softmax, **extra)
    chunked, lr_chunked = _fit(tmp_path / "chunked", chunks=True, algo=algo, softmax=softmax, **extra)
    assert whole.keys() == chunked.keys() and len(whole) > 2
    for name, p in whole.items():
        torch.testing.assert_close(chunked[name], p, atol=1e-5, rtol=1e-4, msg=f"{algo}: {name} differs")
    # the scheduler is stepped by hand under manual optimization: the same learning rates
    assert lr_chunked == lr_whole and len(set(lr_whole)) > 1
    start = _fit(tmp_path / "zero", chunks=True, steps=1, algo=algo, softmax=softmax)[0]
    moved = sum(not torch.equal(start[n], p) for n, p in chunked.items())
    assert moved > 0  # the comparison above compared trained weights, not two untouched copies


@pytest.mark.parametrize("option", ["trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=1.0"])
def test_chunked_backward_refuses_manual_optimization_conflicts_by_name(option):
    from metarec.validate import ConfigError, validate_config

    recipe = compose(["experiment=arsc/multitask_dev"])
    assert recipe.algorithm.backward_chunks is True  # the ARSC recipe's step
    validate_config(recipe)  # alone: fine
    key = option.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}=\S+ cannot be used with algorithm.backward_chunks=true"):
        validate_config(compose(["experiment=arsc/multitask_dev", option]))
    validate_config(compose(["experiment=arsc/multitask_dev", "algorithm.backward_chunks=false", option]))
