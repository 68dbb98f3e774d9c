"""Exact resume from last.ckpt, and every algorithm under bf16 autocast on CPU."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import metarec.algorithms  # noqa: F401
from metarec.config import compose
from metarec.data.datamodule import EpisodicDataModule
from metarec.models.features import FeatureStore
from metarec.registry import ALGORITHMS
from metarec.training import build_trainer
from tests.conftest import tiny_encoder, toy_family

TRAINED = [n for n in ALGORITHMS.list() if ALGORITHMS.get(n).trains]


class _StopAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args):  # noqa: ANN001
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _setup(algo: str, steps: int, precision: str = "32-true", *overrides: str):
    L.seed_everything(0, verbose=False)
    family = toy_family()
    enc = tiny_encoder(freeze="top_k", top_k=1, dropout=0.1)  # dropout: the RNG state matters
    features = FeatureStore(enc, family.corpus.texts, cache_dir=False)
    dm = EpisodicDataModule(family, features, n_way=2, n_shot=2, n_query=3, meta_batch_size=2, max_steps=steps,
                            val_episodes=2, test_episodes=3)
    cfg = compose([f"algorithm={algo}", "encoder=tiny_bert", f"trainer.max_steps={steps}",
                   "trainer.val_check_interval=3", "trainer.enable_progress_bar=false",
                   f"trainer.precision={precision}", *overrides])
    kw = {k: v for k, v in cfg.algorithm.items() if k not in ("name", "search")}
    kw.update(warmup_steps=2)  # warm-up + cosine: the scheduler state matters too
    model = ALGORITHMS.create(algo, encoder=enc, n_way=2, max_steps=steps, **kw)
    return cfg, dm, model


@pytest.mark.parametrize("algo", ["protonet", "maml"])
def test_resume_from_last_checkpoint_equals_uninterrupted_run(algo, tmp_path):
    k = 4
    cfg, dm, model = _setup(algo, 2 * k)
    build_trainer(cfg, tmp_path / "full", logger=False).fit(model, datamodule=dm)
    full = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    cfg, dm, model = _setup(algo, 2 * k)
    every = ModelCheckpoint(dirpath=str(tmp_path / "part" / "checkpoints"), every_n_train_steps=k, save_last=True)
    trainer = build_trainer(cfg, tmp_path / "part", callbacks=[every, _StopAt(k)], checkpoint=False, logger=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == k  # "killed" half-way

    torch.manual_seed(12345)  # a fresh process would not share the interrupted RNG state
    cfg, dm, model = _setup(algo, 2 * k)
    trainer = build_trainer(cfg, tmp_path / "resumed", logger=False)
    trainer.fit(model, datamodule=dm, ckpt_path=str(tmp_path / "part" / "checkpoints" / "last.ckpt"))
    assert trainer.global_step == 2 * k
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, full[n], atol=1e-6, rtol=1e-5, msg=f"{algo}: {n} differs after resume")


class _WorseEachValidation(L.Callback):
    """Overwrites val/acc so that every validation after the first is worse than the best."""

    def __init__(self) -> None:
        self.n = 0

    def on_validation_epoch_end(self, trainer, pl_module):  # noqa: ANN001
        self.n += 1
        trainer.callback_metrics["val/acc"] = torch.tensor(1.0 / self.n)


def test_last_checkpoint_holds_the_final_step_even_when_validation_got_worse(tmp_path):
    # Lightning 2.6's ModelCheckpoint only rewrites last.ckpt with a new best; resuming from it
    # would then silently drop the steps since the best validation.
    cfg, dm, model = _setup("protonet", 9)
    trainer = build_trainer(cfg, tmp_path, callbacks=[_WorseEachValidation()], logger=False)
    trainer.fit(model, datamodule=dm)
    ckpts = tmp_path / "checkpoints"
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 9
    best = [p for p in ckpts.iterdir() if p.name.startswith("best-")]
    assert [torch.load(p, weights_only=False)["global_step"] for p in best] == [3]


class _CrashAt(L.Callback):
    """Raises after the optimizer step ``step``, as a killed process would stop (no on_train_end)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args):  # noqa: ANN001
        if trainer.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")


def test_a_crash_resumes_from_the_newest_validated_step_not_the_best(tmp_path):
    # Validations at steps 3 and 6, the best at 3; the process dies at step 7. last.ckpt must hold
    # step 6 (Lightning's save_last would hold 3), carry the best-model bookkeeping, and a resume
    # from it must end with the uninterrupted run's weights.
    cfg, dm, model = _setup("protonet", 8)
    build_trainer(cfg, tmp_path / "full", callbacks=[_WorseEachValidation()], logger=False).fit(model, datamodule=dm)
    full = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    cfg, dm, model = _setup("protonet", 8)
    trainer = build_trainer(cfg, tmp_path / "run", callbacks=[_WorseEachValidation(), _CrashAt(7)], logger=False)
    with pytest.raises(RuntimeError, match="crash at step 7"):
        trainer.fit(model, datamodule=dm)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 6
    best_state = [v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert [Path(b["best_model_path"]).name for b in best_state] == ["best-3.ckpt"]

    torch.manual_seed(12345)
    cfg, dm, model = _setup("protonet", 8)
    trainer = build_trainer(cfg, tmp_path / "run", logger=False)
    trainer.fit(model, datamodule=dm, ckpt_path=str(last))
    assert trainer.global_step == 8
    assert Path(trainer.checkpoint_callback.best_model_path).name == "best-3.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 8  # the final, unvalidated step
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, full[n], atol=1e-6, rtol=1e-5, msg=f"{n} differs after resume")


@pytest.mark.parametrize("algo", ["protonet", "multitask_prior"])
def test_a_run_validated_only_at_its_end_resumes_from_its_periodic_checkpoint(algo, tmp_path):
    # The ARSC recipe validates once, at its last step: without trainer.checkpoint_every_n_steps a
    # killed run has no last.ckpt at all. With it, last.ckpt holds the newest multiple of the period,
    # saving changes nothing, and a resume from it ends with the uninterrupted run's weights.
    only_at_end = ("trainer.val_check_interval=8",)
    cfg, dm, model = _setup(algo, 8, "32-true", *only_at_end)
    build_trainer(cfg, tmp_path / "full", logger=False).fit(model, datamodule=dm)
    full = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    # every 2 of 8 steps; the crash at step 3 leaves step 2, and a resume there with 6 left is mid-stream for
    # Lightning (2 % 6 != 0), where it warns about a loader that is not resumable
    periodic = (*only_at_end, "trainer.checkpoint_every_n_steps=2")
    cfg, dm, model = _setup(algo, 8, "32-true", *periodic)
    build_trainer(cfg, tmp_path / "saving", logger=False).fit(model, datamodule=dm)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, full[n], atol=0, rtol=0, msg=f"{algo}: saving every 2 steps changed {n}")

    cfg, dm, model = _setup(algo, 8, "32-true", *periodic)
    trainer = build_trainer(cfg, tmp_path / "run", callbacks=[_CrashAt(3)], logger=False)
    with pytest.raises(RuntimeError, match="crash at step 3"):
        trainer.fit(model, datamodule=dm)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2

    torch.manual_seed(12345)
    cfg, dm, model = _setup(algo, 8, "32-true", *periodic)
    trainer = build_trainer(cfg, tmp_path / "run", logger=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=dm, ckpt_path=str(last))
    assert trainer.global_step == 8
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, full[n], atol=1e-6, rtol=1e-5, msg=f"{algo}: {n} differs after resume")
    # the stream is resumable (it restarts at the restored global step), and Lightning is told so
    assert not [w for w in caught if "dataloader is not resumable" in str(w.message)]
    # a checkpoint of another stream is refused by the loader itself, naming the value
    loader = dm.train_dataloader()
    with pytest.raises(ValueError, match=r"seed: 99 in the checkpoint, \d+ here"):
        loader.load_state_dict({**loader.state_dict(), "seed": 99})


def test_checkpoint_every_n_steps_is_refused_where_the_runner_keeps_its_own_checkpoints(tmp_path):
    cfg, _, _ = _setup("protonet", 4, "32-true", "trainer.checkpoint_every_n_steps=2")
    with pytest.raises(ValueError, match="trainer.checkpoint_every_n_steps is not available here"):
        build_trainer(cfg, tmp_path, checkpoint=False, logger=False)
    cfg, _, _ = _setup("protonet", 4, "32-true", "trainer.checkpoint_every_n_steps=0")
    with pytest.raises(ValueError, match=r"trainer.checkpoint_every_n_steps must be null or an integer >= 1, got 0"):
        build_trainer(cfg, tmp_path, logger=False)


@pytest.mark.parametrize("algo", TRAINED)
def test_bf16_autocast_on_cpu_gives_finite_loss_and_gradients(algo, tmp_path):
    cfg, dm, model = _setup(algo, 3, precision="bf16-mixed")
    grads: list[bool] = []
    losses: list[float] = []

    class _Check(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # noqa: ANN001
            gs = [p.grad for p in pl_module.parameters() if p.requires_grad and p.grad is not None]
            grads.append(bool(gs) and all(torch.isfinite(g).all() for g in gs))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            losses.append(float(outputs["loss"]))

    trainer = build_trainer(cfg, tmp_path, callbacks=[_Check()], checkpoint=False, logger=False)
    trainer.fit(model, datamodule=dm)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert grads and all(grads)


def test_fp16_second_order_maml_is_refused_with_advice():
    from metarec.training import build_algorithm

    cfg = compose(["algorithm=maml", "encoder=tiny_bert", "trainer.precision=16-mixed"])
    with pytest.raises(ValueError, match="bf16-mixed"):
        build_algorithm(cfg, tiny_encoder())
