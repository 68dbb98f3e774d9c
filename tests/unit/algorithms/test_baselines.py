"""Baselines on the same episodes as the meta-learners: linear probe, fine-tune and LoRA per
episode (no leak across episodes), Baseline/Baseline++ (meta-training classes only), MetaSGD."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from metarec.algorithms.finetune import FineTune
from metarec.algorithms.linear_probe import LinearProbe
from metarec.algorithms.lora import LoRA
from metarec.algorithms.metasgd import MetaSGD
from metarec.algorithms.transfer import Baseline, BaselinePP
from metarec.data.datamodule import EpisodicDataModule
from metarec.data.family import TaskFamily
from metarec.episode import Episode
from metarec.models.features import FeatureStore
from tests.conftest import tiny_encoder, toy_corpus

SPLITS = {"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7]}


@pytest.fixture(scope="module")
def toy():
    """A class-split toy family, a top_k tiny encoder and its cached hidden states."""
    corpus = toy_corpus(n_classes=8, per_class=10)
    family = TaskFamily.from_class_split("toy", corpus, SPLITS)
    encoder = tiny_encoder(freeze="top_k", top_k=1)
    features = FeatureStore(encoder, corpus.texts, cache_dir=False)
    return family, encoder, features


def _datamodule(toy, **kw) -> EpisodicDataModule:
    family, _, features = toy
    args = dict(n_way=2, n_shot=3, n_query=4, meta_batch_size=2, max_steps=4, val_episodes=2, test_episodes=2)
    args.update(kw)
    return EpisodicDataModule(family, features, **args)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} changed"


# -- linear probe ---------------------------------------------------------------------------
def test_linear_probe_separates_linearly_separable_embeddings():
    dim, n_way, n_shot, n_query = 16, 5, 5, 20
    g = torch.Generator().manual_seed(0)
    centers = 4.0 * torch.randn(n_way, dim, generator=g)

    def draw(n):
        y = torch.arange(n_way).repeat_interleave(n)
        return centers[y] + 0.3 * torch.randn(len(y), dim, generator=g), y

    sx, sy = draw(n_shot)
    qx, qy = draw(n_query)
    # Separable by construction: nearest center classifies every point correctly.
    assert (torch.cdist(qx, centers).argmin(1) == qy).all()
    encoder = tiny_encoder(freeze="frozen", hidden_size=dim, num_heads=1)  # passes embeddings through
    model = LinearProbe(encoder=encoder, n_way=n_way).eval()
    ep = Episode(support_x=sx, support_y=sy, query_x=qx, query_y=qy, classes=[f"c{i}" for i in range(n_way)], family="t")
    with torch.no_grad():  # as in Lightning's test loop: the fit must enable grad itself
        _, logits = model.episode_forward(ep)
    assert (logits.argmax(-1) == qy).float().mean().item() == 1.0


# -- fine-tune ------------------------------------------------------------------------------
def test_finetune_restores_pretrained_weights_and_lowers_support_loss(toy):
    _, encoder, _ = toy
    ds = _datamodule(toy).eval_dataset("test")
    model = FineTune(encoder=encoder, n_way=2, steps=8, lr=1e-2, head_lr=1e-1, head_init="zeros").eval()
    pretrained = _state(encoder)
    results = []
    for k in range(2):
        with torch.no_grad():
            _, logits = model.episode_forward(ds[k])
        losses = model.last_support_losses
        assert len(losses) == 8 and losses[-1] < losses[0], f"episode {k}: support loss {losses}"
        _assert_bit_identical(_state(encoder), pretrained)  # restore works after episode k
        results.append(logits)
    # No leak: episode 0 again gives the very same predictions.
    with torch.no_grad():
        _, again = model.episode_forward(ds[0])
    torch.testing.assert_close(again, results[0])


def test_finetune_trains_the_encoder_top_not_only_the_head(toy):
    _, encoder, _ = toy
    model = FineTune(encoder=encoder, n_way=2, steps=2, lr=1e-2).eval()
    top, head = model.fit_episode(_datamodule(toy).eval_dataset("test")[0])
    assert top is not None and all(p.grad is not None for p in top.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(top.parameters(), encoder.trainable_top().parameters())]
    assert any(changed)


# -- LoRA -----------------------------------------------------------------------------------
def test_lora_trains_only_adapters_and_head_and_keeps_base_weights(toy):
    _, encoder, _ = toy
    ds = _datamodule(toy).eval_dataset("test")
    model = LoRA(encoder=encoder, n_way=2, rank=2, alpha=4, steps=5, lr=1e-2).eval()
    base = {k: v for k, v in _state(model.lora_top).items() if "lora_" not in k}
    pretrained = _state(encoder)
    adapters_init = [p.detach().clone() for p in model.adapters()]
    for k in range(2):
        top, head = model.fit_episode(ds[k])
        assert top is model.lora_top
        for name, p in top.named_parameters():
            if "lora_" in name:
                assert p.grad is not None, f"adapter {name} received no gradient"
            else:
                assert p.grad is None and not p.requires_grad, f"base weight {name} received a gradient"
        assert all(p.grad is not None for p in head.parameters())
        assert all(p.grad is None for p in encoder.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(model.adapters(), adapters_init)), "adapters did not train"
        with torch.no_grad():
            model.episode_forward(ds[k])
        _assert_bit_identical({k2: v for k2, v in _state(model.lora_top).items() if "lora_" not in k2}, base)
        _assert_bit_identical(_state(encoder), pretrained)
    # Adapters are re-initialized per episode: episode 0 again, same predictions.
    with torch.no_grad():
        _, a = model.episode_forward(ds[0])
        model.episode_forward(ds[1])
        _, b = model.episode_forward(ds[0])
    torch.testing.assert_close(a, b)


def test_lora_rejects_a_frozen_encoder():
    with pytest.raises(ValueError, match="freeze=top_k"):
        LoRA(encoder=tiny_encoder(freeze="frozen"), n_way=2)


# -- Baseline / Baseline++ ------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Baseline, BaselinePP])
def test_transfer_multitask_stage_sees_only_meta_training_classes(toy, tmp_path, cls):
    family, _, _ = toy
    dm = _datamodule(toy)
    # Its own encoder (same seed, so the cached bottom states fit): training changes the top.
    encoder = tiny_encoder(freeze="top_k", top_k=1)
    model = cls(encoder=encoder, n_way=2, outer_lr=1e-2, encoder_lr=1e-3, max_steps=4)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, use_distributed_sampler=False, inference_mode=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    train_names = {family.class_names[c] for c in SPLITS["train"]}
    held_out = {family.class_names[c] for c in SPLITS["val"] + SPLITS["test"]}
    assert model.train_classes == sorted(train_names)
    assert model.seen_classes and model.seen_classes <= train_names and not model.seen_classes & held_out
    assert model.train_head is not None and model.train_head(torch.zeros(1, encoder.dim)).shape == (1, len(train_names))
    # A meta-test episode reaching the multi-task stage is an error, not a silent extra class.
    with pytest.raises(RuntimeError, match="not a meta-training class"):
        model.training_step([dm.eval_dataset("test")[0]], 0)
    trainer.test(model, datamodule=dm, verbose=False)
    assert len(model.test_records) == 2


# -- MetaSGD --------------------------------------------------------------------------------
def test_metasgd_inner_lrs_are_parameters_and_learn(toy):
    _, encoder, _ = toy
    model = MetaSGD(encoder=encoder, n_way=2, inner_lr=0.1, inner_steps=1, outer_lr=1e-2)
    lrs = list(model.inner_lrs)
    assert lrs and all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in lrs)
    n_learner = sum(1 for _ in model.learner.module.parameters())
    assert len(lrs) == n_learner  # one rate tensor per adapted parameter, same shapes
    assert all(a.shape == p.shape for a, p in zip(lrs, model.learner.module.parameters()))
    opt = model.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in lrs)
    before = [p.detach().clone() for p in lrs]
    model.train()
    episode = _datamodule(toy).eval_dataset("train")[0]
    loss, _ = model.episode_forward(episode)
    loss.backward()
    assert all(p.grad is not None for p in lrs[-2:])  # the head's rates
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(lrs, before)), "no inner learning rate changed"
