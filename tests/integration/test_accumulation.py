"""``trainer.accumulate_grad_batches``: k meta-batches of B episodes summed into one outer step
equal one meta-batch of k*B episodes (same episodes, same dropout draws, same update); the
cold-start recommenders refuse the option by name instead of ignoring it."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import metarec.algorithms  # noqa: F401
from metarec.config import compose
from metarec.data.datamodule import EpisodicDataModule, MetaBatchSampler
from metarec.models.features import FeatureStore
from metarec.registry import ALGORITHMS
from metarec.training import build_trainer, config_kwargs, run_experiment
from tests.conftest import tiny_encoder, toy_family


def _train(algo: str, meta_batch: int, accumulate: int, steps: int, tmp_path) -> dict[str, torch.Tensor]:
    L.seed_everything(0, verbose=False)
    family = toy_family()
    enc = tiny_encoder(freeze="top_k", top_k=1)
    features = FeatureStore(enc, family.corpus.texts, cache_dir=False, store_dtype=torch.float32)
    dm = EpisodicDataModule(family, features, n_way=2, n_shot=2, n_query=3, meta_batch_size=meta_batch,
                            max_steps=steps, val_episodes=2, test_episodes=2, accumulate=accumulate)
    cfg = compose([f"algorithm={algo}", "encoder=tiny_bert", f"trainer.max_steps={steps}",
                   f"trainer.val_check_interval={steps}", "trainer.enable_progress_bar=false",
                   f"trainer.accumulate_grad_batches={accumulate}"])
    kw = config_kwargs(cfg.algorithm)
    # SGD: see test_ddp.py (Adam would amplify the rounding noise of exactly-zero gradients).
    kw.update(warmup_steps=0, lr_schedule="constant", outer_lr=0.5, encoder_lr=0.5, optimizer="sgd")
    model = ALGORITHMS.create(algo, encoder=enc, n_way=2, max_steps=steps, **kw)
    trainer = build_trainer(cfg, tmp_path / f"run-{meta_batch}x{accumulate}", accelerator="cpu", logger=False,
                            checkpoint=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == steps  # outer steps, not meta-batches
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("algo", ["protonet", "fomaml"])
def test_accumulated_meta_batches_equal_one_larger_meta_batch(algo, tmp_path):
    big = _train(algo, meta_batch=4, accumulate=1, steps=3, tmp_path=tmp_path)
    acc = _train(algo, meta_batch=2, accumulate=2, steps=3, tmp_path=tmp_path)
    assert big.keys() == acc.keys() and big
    for name, p in big.items():
        torch.testing.assert_close(acc[name], p, atol=1e-5, rtol=1e-4, msg=f"{algo}: {name} differs")


def test_sampler_gives_step_t_the_episodes_of_one_big_meta_batch():
    world = lambda: (1, 1, 2)  # noqa: E731  resumed at step 1, rank 1 of 2
    acc = list(MetaBatchSampler(2, 3, world, accumulate=3))
    big = list(MetaBatchSampler(6, 3, world))
    assert len(acc) == 3 * len(big) == 6
    assert [i for b in acc[:3] for i in b] == big[0] and [i for b in acc[3:] for i in b] == big[1]


def test_recommenders_refuse_accumulation_by_name(tmp_path):
    cfg = compose(["experiment=coldstart-ml100k/maml", "trainer.accumulate_grad_batches=2", f"run_dir={tmp_path}"])
    with pytest.raises(ValueError, match="trainer.accumulate_grad_batches=2 is not supported by .melu_maml."):
        run_experiment(cfg)


def test_bad_accumulation_value_is_named(tmp_path):
    cfg = compose(["trainer.accumulate_grad_batches=0"])
    with pytest.raises(ValueError, match="trainer.accumulate_grad_batches must be an integer >= 1, got 0"):
        build_trainer(cfg, tmp_path)


def test_resume_with_accumulation_equals_uninterrupted_run(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def setup(steps: int):  # noqa: ANN202
        L.seed_everything(0, verbose=False)
        family = toy_family()
        enc = tiny_encoder(freeze="top_k", top_k=1, dropout=0.1)  # dropout: the RNG state matters
        features = FeatureStore(enc, family.corpus.texts, cache_dir=False)
        dm = EpisodicDataModule(family, features, n_way=2, n_shot=2, n_query=3, meta_batch_size=1, max_steps=steps,
                                val_episodes=2, test_episodes=2, accumulate=2)
        cfg = compose(["algorithm=protonet", "encoder=tiny_bert", f"trainer.max_steps={steps}",
                       "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
                       "trainer.accumulate_grad_batches=2"])
        kw = config_kwargs(cfg.algorithm)
        kw.update(warmup_steps=2)
        return cfg, dm, ALGORITHMS.create("protonet", encoder=enc, n_way=2, max_steps=steps, **kw)

    class StopAt(L.Callback):
        def on_train_batch_end(self, trainer, *args):  # noqa: ANN001, ANN002
            if trainer.global_step >= 2:
                trainer.should_stop = True

    cfg, dm, model = setup(4)
    build_trainer(cfg, tmp_path / "full", logger=False).fit(model, datamodule=dm)
    full = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg, dm, model = setup(4)
    every = ModelCheckpoint(dirpath=str(tmp_path / "part"), every_n_train_steps=2, save_last=True)
    trainer = build_trainer(cfg, tmp_path / "part", callbacks=[every, StopAt()], checkpoint=False, logger=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2
    torch.manual_seed(12345)  # a fresh process would not share the interrupted RNG state
    cfg, dm, model = setup(4)
    trainer = build_trainer(cfg, tmp_path / "resumed", logger=False)
    trainer.fit(model, datamodule=dm, ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    assert trainer.global_step == 4
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, full[n], atol=1e-6, rtol=1e-5, msg=f"{n} differs after resume")
