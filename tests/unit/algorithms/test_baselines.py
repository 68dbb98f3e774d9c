"""Baselines on the same episodes as the meta-learners: linear probe, fine-tune and LoRA per
episode (no leak across episodes), Baseline/Baseline++ (meta-training classes only), MetaSGD."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from metarec.algorithms.finetune import FineTune
from metarec.algorithms.linear_probe import LinearProbe
from metarec.algorithms.lora import LoRA
from metarec.algorithms.multitask_prior import MultiTaskPrior
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
@pytest.mark.parametrize("cls", [Baseline, BaselinePP, MultiTaskPrior])
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


# -- multi-task heads and the label-aware prior (the ARSC recipe) ----------------------------
def test_fit_head_center_pulls_towards_the_given_head():
    from metarec.algorithms.fitting import fit_head
    from metarec.models.heads import LinearHead

    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(10, 8, generator=g), torch.arange(2).repeat(5)
    w0, b0 = torch.randn(2, 8, generator=g), torch.randn(2, generator=g)
    fits = []
    for l2 in (1e4, 1e-4):
        head = LinearHead(8, 2)
        fit_head(head, z, y, l2=l2, center={"linear.weight": w0, "linear.bias": b0}, max_iter=200)
        fits.append(head)
    # A strong prior keeps the head at its centre; a weak one lets the support decide.
    assert (fits[0].linear.weight - w0).abs().max() < 1e-2 and (fits[0].linear.bias - b0).abs().max() < 1e-2
    assert (fits[1].linear.weight - w0).abs().max() > 0.1
    with pytest.raises(ValueError, match="not parameters of the head"):
        fit_head(LinearHead(8, 2), z, y, l2=1.0, center={"weight": w0})


def test_prior_key():
    from metarec.algorithms.task_prior import prior_key

    assert prior_key("apparel.t2:negative", "label") == "negative"
    assert prior_key("apparel.t2:negative", "subtask") == "t2:negative"


def _named_family():
    """Tasks named <domain>.<threshold> with classes <task>:negative / <task>:positive."""
    from metarec.data.corpus import LabeledCorpus
    from metarec.data.family import Task

    import numpy as np

    words = {0: "awful broke bad", 1: "great love good"}
    texts, labels, groups, names = [], [], [], []
    tasks = ["a.t2", "b.t2", "c.t4", "d.t2"]
    for g, task in enumerate(tasks):
        for y in (0, 1):
            for i in range(8):
                texts.append(f"{task} item {i} {words[y]}")
                labels.append(y)
                groups.append(g)
    corpus = LabeledCorpus(texts=texts, labels=np.array(labels), label_names=["negative", "positive"],
                           groups=np.array(groups), group_names=tasks, name="named")
    class_names = [f"{t}:{c}" for t in tasks for c in ("negative", "positive")]
    ids = np.array(groups) * 2 + np.array(labels)
    rows = np.arange(len(texts))
    splits = {}
    for split, g in (("train", [0, 1, 2]), ("val", [0]), ("test", [3])):
        splits[split] = [Task(name=tasks[i], indices=rows[np.array(groups) == i], labels=ids[np.array(groups) == i])
                         for i in g]
    test = splits["test"][0]
    test.support, test.query = test.indices[[0, 1, 8, 9]], test.indices[[2, 3, 10, 11]]
    return TaskFamily(name="named", corpus=corpus, class_names=class_names, splits=splits)


def _named_setup(**model_kwargs):
    """The named family, a top_k tiny encoder, its datamodule and a bound ARSC recipe model."""
    family = _named_family()
    encoder = tiny_encoder(freeze="top_k", top_k=1)
    features = FeatureStore(encoder, family.corpus.texts, cache_dir=False)
    dm = EpisodicDataModule(family, features, n_way=2, n_shot=2, n_query=2, meta_batch_size=2, max_steps=2,
                            val_episodes=1, test_episodes=1)
    model_kwargs.setdefault("logit_adjust", 0.0)
    model = MultiTaskPrior(encoder=encoder, n_way=2, prior_match="subtask", prior_l2=float("inf"), max_steps=2,
                           **model_kwargs)
    model.bind_family(family)
    dm.setup("fit")
    return encoder, dm, model


def test_episode_softmax_and_prior_head_follow_the_class_names(tmp_path):
    encoder, dm, model = _named_setup()
    episodes = next(iter(dm.train_dataloader()))
    loss = model.training_step(episodes, 0)
    # Per-task softmax over 2 of 6 classes: a fresh head gives a loss near log 2, not log 6.
    assert abs(float(loss.detach()) - torch.log(torch.tensor(2.0)).item()) < 0.3
    with torch.no_grad():
        model.train_head.linear.weight.copy_(torch.randn(6, encoder.dim, generator=torch.Generator().manual_seed(1)))
        model.train_head.linear.bias.copy_(torch.arange(6.0))
    test = dm.eval_dataset("test")[0]
    support = model.embed_episode(test)[0].float()
    w0, b0 = model.prior_head(test, support)
    # d.t2:<label> starts at the mean of a.t2 and b.t2 (the same threshold); c.t4 is not used.
    lin = model.train_head.linear
    names = model.train_classes
    for c, name in enumerate(test.classes):
        label = name.rsplit(":", 1)[1]
        idx = [names.index(f"a.t2:{label}"), names.index(f"b.t2:{label}")]
        torch.testing.assert_close(w0[c], lin.weight[idx].mean(0))
        torch.testing.assert_close(b0[c], lin.bias[idx].mean())
    # Test-time adaptation fine-tunes a copy of the top: other logits, same encoder weights.
    model.prior_l2 = 1.0
    before = _state(encoder)
    _, plain = model.episode_forward(test)
    model.adapt_steps, model.adapt_lr = 3, 1e-2
    _, adapted = model.episode_forward(test)
    _assert_bit_identical(before, _state(encoder))
    assert not torch.allclose(plain, adapted)
    with pytest.raises(ValueError, match="train_softmax must be one of"):
        MultiTaskPrior(encoder=encoder, n_way=2, train_softmax="nope")
    with pytest.raises(ValueError, match="adapt_steps must be >= 0"):
        MultiTaskPrior(encoder=encoder, n_way=2, adapt_steps=-1)


def test_support_weighted_prior_is_the_posterior_mean_over_matching_tasks():
    encoder, dm, model = _named_setup(prior_weighting="support")
    test = dm.eval_dataset("test")[0]
    support = model.embed_episode(test)[0].float()
    names = model.train_classes
    lin = model.train_head.linear
    a = [names.index(f"a.t2:{c.rsplit(':', 1)[1]}") for c in test.classes]
    b = [names.index(f"b.t2:{c.rsplit(':', 1)[1]}") for c in test.classes]
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        # a.t2's head explains the support (class margin along the support's own class means);
        # b.t2's head has it backwards; c.t4 (another threshold) must not take part.
        direction = support[test.support_y == 1].mean(0) - support[test.support_y == 0].mean(0)
        lin.weight[a[1]] = 5 * direction
        lin.weight[b[0]] = 5 * direction
    y = test.support_y

    def loglik(rows):
        return -torch.nn.functional.cross_entropy(support @ lin.weight[rows].T + lin.bias[rows], y, reduction="sum")

    b_weight = []
    for temperature in (1.0, 10.0):
        model.prior_temperature = temperature
        w0, b0 = model.prior_head(test, support)
        weights = torch.softmax(torch.stack([loglik(a), loglik(b)]) / temperature, 0)
        torch.testing.assert_close(w0, weights[0] * lin.weight[a] + weights[1] * lin.weight[b])
        torch.testing.assert_close(b0, weights[0] * lin.bias[a] + weights[1] * lin.bias[b])
        assert weights[0] > 0.5
        b_weight.append(float(weights[1]))
    # A flatter posterior gives b.t2 more weight; the plain mean gives both one half.
    assert b_weight[1] > b_weight[0]
    model.prior_weighting = "mean"
    w_mean, _ = model.prior_head(test, support)
    torch.testing.assert_close(w_mean, 0.5 * (lin.weight[a] + lin.weight[b]))
    with pytest.raises(ValueError, match="prior_weighting must be one of"):
        MultiTaskPrior(encoder=encoder, n_way=2, prior_weighting="nope")
    with pytest.raises(ValueError, match="prior_temperature must be > 0"):
        MultiTaskPrior(encoder=encoder, n_way=2, prior_temperature=0.0)


def test_shared_head_trains_one_row_per_key_and_is_the_prior():
    encoder, dm, model = _named_setup(shared_head="subtask")
    # Three training tasks (a.t2, b.t2, c.t4), four rows: one per threshold and label.
    assert model.head_rows == ["t2:negative", "t2:positive", "t4:negative", "t4:positive"]
    assert model.train_head.linear.weight.shape == (4, encoder.dim)
    by_task = {}
    for episodes in dm.train_dataloader():
        for episode in episodes:
            by_task[episode.task] = (episode.classes, model.global_labels(episode).tolist())
    # a.t2 and b.t2 train the same two rows (in their own class order); c.t4 its own two.
    for task, (classes, rows) in by_task.items():
        assert [model.head_rows[r] for r in rows] == [c.split(".", 1)[1] for c in classes]
    assert "c.t4" in by_task and {"a.t2", "b.t2"} & set(by_task)
    loss = model.training_step(next(iter(dm.train_dataloader())), 0)
    assert abs(float(loss.detach()) - torch.log(torch.tensor(2.0)).item()) < 0.3
    test = dm.eval_dataset("test")[0]                      # d.t2, never trained on
    support = model.embed_episode(test)[0].float()
    w0, b0 = model.prior_head(test, support)
    lin = model.train_head.linear
    rows = [model.head_rows.index(c.split(".", 1)[1]) for c in test.classes]
    torch.testing.assert_close(w0, lin.weight[rows])
    torch.testing.assert_close(b0, lin.bias[rows])
    with pytest.raises(ValueError, match="shared_head must be None or one of"):
        MultiTaskPrior(encoder=encoder, n_way=2, shared_head="domain")
    with pytest.raises(ValueError, match="prior_weighting='support' weighs per-task heads"):
        MultiTaskPrior(encoder=encoder, n_way=2, shared_head="subtask", prior_weighting="support")


def test_logit_adjust_adds_the_training_tasks_log_class_frequencies(caplog):
    import logging

    import numpy as np

    from metarec.algorithms.task_prior import key_frequencies
    from metarec.data.family import Task

    encoder, dm, model = _named_setup(logit_adjust=1.0)
    # The named family is balanced: every key has frequency 1/2.
    assert model.logit_adjustment.frequency == {"t2:negative": 0.5, "t2:positive": 0.5, "t4:negative": 0.5, "t4:positive": 0.5}
    family = _named_family()
    a = family.splits["train"][0]                           # a.t2: keep 2 of its 8 negatives
    keep = np.r_[np.flatnonzero(a.labels % 2 == 0)[:2], np.flatnonzero(a.labels % 2 == 1)]
    family.splits["train"][0] = Task(name=a.name, indices=a.indices[keep], labels=a.labels[keep])
    freq = key_frequencies(family, "subtask")
    # t2 rows: a.t2 2 negative + 8 positive, b.t2 8 + 8 -> negative 10/26; c.t4 stays balanced.
    assert freq == pytest.approx({"t2:negative": 10 / 26, "t2:positive": 16 / 26, "t4:negative": 0.5, "t4:positive": 0.5})
    assert key_frequencies(family, "label") == pytest.approx({"negative": 18 / 42, "positive": 24 / 42})
    model.logit_adjustment.frequency = freq
    test = dm.eval_dataset("test")[0]                      # d.t2
    model.logit_adjustment.tau = 0.0
    _, plain = model.episode_forward(test)
    model.logit_adjustment.tau = 0.5
    _, adjusted = model.episode_forward(test)
    log_pi = torch.log(torch.tensor([freq[c.split(".", 1)[1]] for c in test.classes]))
    torch.testing.assert_close(adjusted - plain, 0.5 * log_pi.expand_as(plain))
    # No training class with d.t2's keys: the episode keeps the uniform prior, with a warning.
    model.logit_adjustment.frequency = {"t4:negative": 0.5, "t4:positive": 0.5}
    with caplog.at_level(logging.WARNING, logger="metarec.algorithms.task_prior"):
        _, unadjusted = model.episode_forward(test)
    torch.testing.assert_close(unadjusted, plain)
    assert "are not adjusted" in caplog.text
    with pytest.raises(ValueError, match="logit_adjust must be >= 0"):
        MultiTaskPrior(encoder=encoder, n_way=2, logit_adjust=-1.0)


def test_ordinal_head_shares_one_score_per_group_and_is_read_as_rows():
    from metarec.algorithms.task_prior import ordinal_rows
    from metarec.models.heads import OrdinalHead

    names = ["x.t2:negative", "x.t2:positive", "x.t5:positive", "x.t5:negative", "y.t2:positive", "y.t2:negative"]
    group, task, sign = ordinal_rows(names)
    assert (group, task, sign) == ([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2], [-1, 1, 1, -1, 1, -1])
    head = OrdinalHead(4, group, task, sign)
    with torch.no_grad():
        head.cut.copy_(torch.tensor([-1.0, 2.0, 0.5]))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    logits = head(x)
    score = x @ head.score.weight.T                                  # (3, n_groups)
    # Each task's log-odds (upper minus lower row) is its group's score minus its own cut.
    torch.testing.assert_close(logits[:, 1] - logits[:, 0], score[:, 0] + 1.0)
    torch.testing.assert_close(logits[:, 2] - logits[:, 3], score[:, 0] - 2.0)
    torch.testing.assert_close(logits[:, 4] - logits[:, 5], score[:, 1] - 0.5)
    weight, bias = head.rows()
    torch.testing.assert_close(logits, x @ weight.T + bias)
    # x.t2 and x.t5 share one direction; y has its own.
    torch.testing.assert_close(weight[1], weight[2])
    assert not torch.allclose(weight[1], weight[4])
    for bad in (["x.t2:neutral"], ["xt2:negative"]):
        with pytest.raises(ValueError, match="is not '<group>.<subtask>:<label>'"):
            ordinal_rows(bad)


def test_ordinal_recipe_trains_the_scores_and_its_prior_is_the_mean_row():
    encoder, dm, model = _named_setup(ordinal=True)
    from metarec.models.heads import OrdinalHead

    assert isinstance(model.train_head, OrdinalHead)
    assert model.train_head.score.weight.shape == (3, encoder.dim)  # groups a, b, c
    loss = model.training_step(next(iter(dm.train_dataloader())), 0)
    assert abs(float(loss.detach()) - torch.log(torch.tensor(2.0)).item()) < 0.3
    loss.backward()
    assert model.train_head.score.weight.grad.abs().sum() > 0
    assert model.train_head.cut.grad.abs().sum() > 0
    test = dm.eval_dataset("test")[0]                      # d.t2: prior from a.t2 and b.t2
    support = model.embed_episode(test)[0].float()
    w0, b0 = model.prior_head(test, support)
    weight, bias = model.train_head.rows()
    names = model.train_classes
    for c, name in enumerate(test.classes):
        label = name.rsplit(":", 1)[1]
        idx = [names.index(f"a.t2:{label}"), names.index(f"b.t2:{label}")]
        torch.testing.assert_close(w0[c], weight[idx].mean(0).detach())
        torch.testing.assert_close(b0[c], bias[idx].mean().detach())
    with pytest.raises(ValueError, match="cannot share rows"):
        MultiTaskPrior(encoder=encoder, n_way=2, ordinal=True, shared_head="subtask")


def test_leave_one_out_loss_classifies_each_row_by_the_other_domains_mean_head():
    import torch.nn.functional as F

    from metarec.algorithms.task_prior import leave_one_out_rows

    encoder, dm, model = _named_setup(loo_weight=1.0)   # training tasks a.t2, b.t2, c.t4
    names = model.train_classes
    lin = model.train_head.linear
    with torch.no_grad():
        lin.weight.copy_(torch.randn(6, encoder.dim, generator=torch.Generator().manual_seed(2)))
        lin.bias.copy_(torch.arange(6.0))
    w, b = leave_one_out_rows(lin.weight, lin.bias, model._loo_group)
    for label in ("negative", "positive"):
        a, bb, c = (names.index(f"{t}:{label}") for t in ("a.t2", "b.t2", "c.t4"))
        torch.testing.assert_close(w[a], lin.weight[bb])       # a.t2 is read by b.t2's head ...
        torch.testing.assert_close(b[bb], lin.bias[a])         # ... and b.t2 by a.t2's
        torch.testing.assert_close(w[c], lin.weight[c])        # c.t4 has no other t4 task: its own
    # Rows of task a.t2 only: the loss adds the cross-entropy of b.t2's head, and b.t2's rows learn.
    z = torch.randn(5, encoder.dim, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([names.index("a.t2:negative")] * 3 + [names.index("a.t2:positive")] * 2)
    allowed = torch.zeros(6, dtype=torch.bool)
    allowed[[names.index("a.t2:negative"), names.index("a.t2:positive")]] = True

    def masked(logits):
        return logits.masked_fill(~allowed, float("-inf"))

    loss, logits = model.head_loss(z, y, masked)
    expected = F.cross_entropy(masked(lin(z)), y) + F.cross_entropy(masked(F.linear(z, w, b)), y)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, masked(lin(z)))
    loss.backward()
    assert lin.weight.grad[names.index("b.t2:negative")].abs().sum() > 0
    lin.weight.grad = None
    model.loo_weight = 0.0
    model.head_loss(z, y, masked)[0].backward()
    assert lin.weight.grad[names.index("b.t2:negative")].abs().sum() == 0   # without it, only a.t2's rows
    # The whole training step runs with it.
    model.loo_weight = 1.0
    assert torch.isfinite(model.training_step(next(iter(dm.train_dataloader())), 0))
    with pytest.raises(ValueError, match="loo_weight must be >= 0"):
        MultiTaskPrior(encoder=encoder, n_way=2, loo_weight=-1.0)
    with pytest.raises(ValueError, match="shared_head='subtask' trains one row per key"):
        MultiTaskPrior(encoder=encoder, n_way=2, loo_weight=1.0, shared_head="subtask")


def test_em_class_prior_recovers_the_query_sets_prior_and_transductive_adjustment_uses_it():
    from metarec.algorithms.task_prior import LogitAdjustment, em_class_prior

    g = torch.Generator().manual_seed(0)
    n = 4000
    y = (torch.rand(n, generator=g) < 0.8).long()                  # 80% class 1
    x = torch.randn(n, generator=g) + 2.0 * y                      # N(0,1) vs N(2,1)
    # Calibrated logits of a head that assumes a uniform prior: the class log-likelihoods.
    logits = torch.stack([-0.5 * x.pow(2), -0.5 * (x - 2).pow(2)], 1)
    prior = em_class_prior(logits, torch.tensor([0.5, 0.5]))
    assert abs(float(prior[1]) - 0.8) < 0.03 and abs(float(prior.sum()) - 1) < 1e-5
    assert abs(float(em_class_prior(logits, torch.tensor([0.9, 0.1]))[1]) - float(prior[1])) < 1e-3  # any start
    episode = SimpleEpisode(classes=("d.t2:negative", "d.t2:positive"))
    freq = {"t2:negative": 0.5, "t2:positive": 0.5}
    inductive = LogitAdjustment(freq, 1.0, "subtask")(episode, logits)
    transductive = LogitAdjustment(freq, 1.0, "subtask", transductive=True)(episode, logits)
    torch.testing.assert_close(inductive, logits + torch.log(torch.tensor(0.5)))  # uniform: a constant shift
    torch.testing.assert_close(transductive, logits + torch.log(prior))
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match="transductive=true .* needs logit_adjust > 0"):
        MultiTaskPrior(encoder=encoder, n_way=2, transductive=True, logit_adjust=0.0)


class SimpleEpisode:
    """The two attributes of an Episode that logit adjustment reads."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes, self.index, self.task = classes, 0, "d.t2"


def test_the_printed_result_name_marks_other_protocols():
    from metarec.cli import _result_name
    from metarec.config import compose

    # The printed result says that its test read the queries: another protocol.
    assert "[transductive" in _result_name(compose(["experiment=arsc/multitask_dev", "+algorithm.transductive=true"]))
    assert "[transductive" not in _result_name(compose(["experiment=arsc/multitask_dev"]))
    # ... and that an oracle run trained on the held-out domains' labels (not a few-shot result).
    both = _result_name(compose(["experiment=arsc/multitask_dev", "family.oracle_heldout_train=true",
                                 "+algorithm.transductive=true"]))
    assert "[oracle: trained on the held-out domains' labelled .train files; transductive" in both
    assert "oracle" not in _result_name(compose(["experiment=arsc/multitask_dev"]))
    alone = _result_name(compose(["experiment=arsc/multitask_dev", "family.oracle_heldout_train=true"]))
    assert alone.endswith("[oracle: trained on the held-out domains' labelled .train files]")
