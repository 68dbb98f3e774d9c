"""``trainer.weight_averaging_start``: the tested weights and ``last.ckpt`` are the uniform mean of
the weights after every step from the start step on (the recipe's chunked backward, manual
optimization), a resume continues the average exactly, and a bad value is refused by name."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import metarec.algorithms  # noqa: F401
from metarec.checkpoint import read_checkpoint
from metarec.config import compose
from metarec.data.datamodule import EpisodicDataModule
from metarec.models.features import FeatureStore
from metarec.registry import ALGORITHMS
from metarec.runtime import test_model as fit_test, weight_averaging_start
from metarec.training import build_trainer, config_kwargs
from tests.conftest import tiny_encoder, toy_family

STEPS = 6


def _run(run_dir, start: float | None, steps: int = STEPS, resume: str | None = None, tested: dict | None = None):
    L.seed_everything(0, verbose=False)
    family = toy_family()
    enc = tiny_encoder(freeze="top_k", top_k=1, length_buckets=2)
    features = FeatureStore(enc, family.corpus.texts, cache_dir=False, store_dtype=torch.float32)
    dm = EpisodicDataModule(family, features, n_way=2, n_shot=2, n_query=3, meta_batch_size=2,
                            max_steps=steps, val_episodes=2, test_episodes=2)
    cfg = compose(["algorithm=arsc_recipe", "encoder=tiny_bert", f"trainer.max_steps={steps}",
                   "trainer.val_check_interval=3", "trainer.enable_progress_bar=false", "trainer.keep_checkpoints=-1",
                   f"trainer.weight_averaging_start={'null' if start is None else start}"])
    kw = config_kwargs(cfg.algorithm)
    kw.update(warmup_steps=1)
    model = ALGORITHMS.create("multitask_prior", encoder=enc, n_way=2, max_steps=steps, **kw)
    seen: list[dict[str, torch.Tensor]] = []  # the weights after each optimizer step, as trained

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):  # noqa: ANN001, ANN002
            seen.append({n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad})

        def on_test_start(self, trainer, pl_module):  # noqa: ANN001
            if tested is not None:
                tested.update({n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad})

    trainer = build_trainer(cfg, run_dir, accelerator="cpu", logger=False, callbacks=[Record()])
    trainer.fit(model, datamodule=dm, ckpt_path=resume)
    assert trainer.global_step == steps
    final = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    if tested is not None:  # the fit's own test of its checkpoint, as metarec fit runs it
        fit_test(trainer, model, dm, str(run_dir / "checkpoints" / "last.ckpt"))
    return final, seen


def test_the_final_weights_are_the_mean_of_the_steps_from_start_on(tmp_path):
    tested: dict[str, torch.Tensor] = {}
    final, seen = _run(tmp_path / "avg", start=0.5, tested=tested)  # steps 4, 5, 6 of 6
    assert len(seen) == STEPS and len(final) > 2
    for name, p in final.items():
        mean = torch.stack([s[name] for s in seen[3:]]).mean(0)
        torch.testing.assert_close(p, mean, atol=1e-6, rtol=1e-5, msg=name)
    # the average is not the last step's weights: the steps moved the weights it averages
    assert any(not torch.allclose(final[n], seen[-1][n]) for n in final)
    ckpt = read_checkpoint(tmp_path / "avg" / "checkpoints" / "last.ckpt")
    for name, p in final.items():  # last.ckpt holds the average (and the current weights for a resume)
        torch.testing.assert_close(ckpt["state_dict"][name], p, msg=name)
        torch.testing.assert_close(ckpt["current_model_state"][name], seen[-1][name], msg=name)
    # the fit's test of that checkpoint tests the average, not the last step's weights it also holds
    assert sorted(tested) == sorted(final)
    for name, p in final.items():
        torch.testing.assert_close(tested[name], p, msg=name)


def test_off_by_default_gives_the_last_steps_weights(tmp_path):
    final, seen = _run(tmp_path / "off", start=None)
    assert compose([]).trainer.weight_averaging_start is None
    for name, p in final.items():
        assert torch.equal(p, seen[-1][name]), name


def test_a_resume_continues_the_average(tmp_path):
    whole, _ = _run(tmp_path / "whole", start=0.3)  # steps 2..6
    # resumed from the same run's step-3 validation checkpoint, it averages the same steps
    step3 = tmp_path / "whole" / "checkpoints" / "val-3.ckpt"  # keep_checkpoints=-1: every validation's
    resumed, seen = _run(tmp_path / "resumed", start=0.3, resume=str(step3))
    assert read_checkpoint(step3)["global_step"] == 3 and len(seen) == STEPS - 3
    for name, p in whole.items():
        torch.testing.assert_close(resumed[name], p, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("value", [1.0, -0.1, "half", True])
def test_a_bad_fraction_is_refused_by_name(value):
    from metarec.validate import ConfigError, validate_config

    cfg = compose(["experiment=arsc/multitask_dev", f"trainer.weight_averaging_start={value}"])
    with pytest.raises(ConfigError, match="trainer.weight_averaging_start"):
        validate_config(cfg)
    with pytest.raises(ValueError, match="trainer.weight_averaging_start"):
        weight_averaging_start(cfg)
    assert weight_averaging_start(compose(["experiment=arsc/multitask_dev",
                                           "trainer.weight_averaging_start=0.5"])) == 601
