"""zero_shot: class descriptions only — the support set (texts and labels) is never used."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metarec.algorithms.zero_shot import ZeroShot, describe
from metarec.data.datamodule import EpisodicDataModule
from metarec.data.family import TaskFamily
from metarec.models.features import FeatureStore
from tests.conftest import tiny_encoder, toy_corpus

TEMPLATES = {"t2": {"negative": "bad {domain}", "positive": ["fine {domain}", "good {domain}"]}}


@pytest.fixture(scope="module", params=["top_k", "frozen"])
def toy(request):
    corpus = toy_corpus(n_classes=8, per_class=10)
    family = TaskFamily.from_class_split("toy", corpus, {"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7]})
    encoder = tiny_encoder(freeze=request.param, top_k=1)
    features = FeatureStore(encoder, corpus.texts, cache_dir=False)
    dm = EpisodicDataModule(family, features, n_way=2, n_shot=3, n_query=4, meta_batch_size=2, max_steps=1,
                            val_episodes=2, test_episodes=2)
    return encoder, dm.eval_dataset("test")


def test_describe_uses_the_threshold_template_for_arsc_and_the_class_template_otherwise():
    assert describe("baby_products.t2:negative", TEMPLATES, "about {name}") == ["bad baby products"]
    assert describe("books.t2:positive", TEMPLATES, "about {name}") == ["fine books", "good books"]
    assert describe("books.t5:positive", TEMPLATES, "about {name}") == ["about books t5:positive"]
    assert describe("home_kitchen", TEMPLATES, ["about {name}", "{name}"]) == ["about home kitchen", "home kitchen"]
    with pytest.raises(ValueError, match="templates.t2 has no entry for label 'neutral'"):
        describe("books.t2:neutral", TEMPLATES, "{name}")


def test_zero_shot_ignores_the_support_set_and_leaves_the_encoder_unchanged(toy):
    encoder, ds = toy
    model = ZeroShot(encoder=encoder, n_way=2, class_template="a {name} item").eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    episode = ds[0]
    _, logits = model.episode_forward(episode)
    assert logits.shape == (episode.query_y.numel(), 2)
    # Other support labels and other support inputs: the very same logits.
    g = torch.Generator().manual_seed(0)
    flipped = dataclasses.replace(episode, support_y=1 - episode.support_y)
    shuffled = dataclasses.replace(episode, support_y=episode.support_y[torch.randperm(episode.support_y.numel(), generator=g)])
    x = episode.support_x
    noise = (torch.randn(x.shape, generator=g) if isinstance(x, torch.Tensor)
             else {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v) for k, v in x.items()})
    perturbed = dataclasses.replace(episode, support_x=noise)
    for other in (flipped, shuffled, perturbed):
        torch.testing.assert_close(model.episode_forward(other)[1], logits, rtol=0, atol=0)
    # The encoder is bit-identical afterwards, and episode 0 again gives the same predictions.
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    model.episode_forward(ds[1])
    torch.testing.assert_close(model.episode_forward(ds[0])[1], logits, rtol=0, atol=0)


def test_zero_shot_predicts_the_class_whose_description_is_the_query_text(toy):
    encoder, ds = toy
    episode = ds[0]
    model = ZeroShot(encoder=encoder, n_way=2).eval()
    # With the class names as "descriptions" and queries equal to those names, each query must go
    # to its own class (a meaningful check even with a random tiny encoder: identical texts).
    names = episode.classes
    tokens = encoder.tokenize([names[int(y)] for y in episode.query_y])
    query_x = tokens if encoder.feature_kind != "embedding" else encoder(tokens)
    if encoder.feature_kind == "hidden":
        query_x = {"hidden_states": encoder.bottom(tokens), "attention_mask": tokens["attention_mask"]}
    _, logits = model.episode_forward(dataclasses.replace(episode, query_x=query_x))
    assert torch.equal(logits.argmax(-1), episode.query_y)


def test_zero_shot_rejects_a_bad_scale():
    with pytest.raises(ValueError, match="scale must be > 0"):
        ZeroShot(encoder=tiny_encoder(), n_way=2, scale=0.0)
