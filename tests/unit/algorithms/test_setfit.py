"""setfit per episode: trains on the support set only, resets its body, repeats exactly."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

pytest.importorskip("setfit", reason="the setfit extra is not installed (scripts/bootstrap.sh installs it)")

from metarec.algorithms.setfit import SetFit  # noqa: E402
from metarec.data.datamodule import EpisodicDataModule  # noqa: E402
from metarec.data.family import TaskFamily  # noqa: E402
from metarec.models.features import FeatureStore  # noqa: E402
from tests.conftest import tiny_encoder, toy_corpus  # noqa: E402


@pytest.fixture(scope="module")
def toy():
    corpus = toy_corpus(n_classes=8, per_class=10)
    family = TaskFamily.from_class_split("toy", corpus, {"train": [0, 1, 2, 3], "val": [4, 5], "test": [6, 7]})
    encoder = tiny_encoder(freeze="frozen")
    features = FeatureStore(encoder, corpus.texts, cache_dir=False)
    dm = EpisodicDataModule(family, features, n_way=2, n_shot=3, n_query=4, meta_batch_size=2, max_steps=1,
                            val_episodes=2, test_episodes=2)
    return corpus, encoder, dm.eval_dataset("test")


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_setfit_trains_on_the_support_only_and_resets_the_body(toy):
    corpus, encoder, ds = toy
    model = SetFit(encoder=encoder, n_way=2, body_max_steps=3).eval()
    model.bind_texts(corpus.texts)
    encoder_before = _state(encoder)
    body_before = _state(model.pristine_body())
    episode = ds[0]
    _, logits = model.episode_forward(episode)
    assert logits.shape == (episode.query_y.numel(), 2)
    # The episode fine-tuned a copy: the fitted body differs, the pristine body and encoder do not.
    fitted = model.fit_episode(episode)
    assert any(not torch.equal(a, b) for a, b in zip(fitted.model_body.state_dict().values(), body_before.values()))
    for before, module in ((encoder_before, encoder), (body_before, model.pristine_body())):
        for k, v in module.state_dict().items():
            assert torch.equal(v, before[k]), f"{k} changed"
    # Episode 1 in between, then episode 0 again, under the bf16 autocast a bf16-mixed test loop
    # opens: the same predictions (SetFit runs in fp32 inside).
    model.episode_forward(ds[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = model.episode_forward(episode)[1]
    torch.testing.assert_close(again, logits)


def test_setfit_reads_only_the_support_rows(toy, capfd, caplog):
    caplog.set_level(logging.INFO)  # as under the CLI: sentence-transformers shows its bars at INFO
    corpus, encoder, ds = toy
    episode = ds[0]
    support = set(episode.support_idx.tolist())
    seen: list[int] = []

    class Spy(list):
        def __getitem__(self, i):  # noqa: ANN001, ANN204
            seen.append(i)
            return super().__getitem__(i)

    model = SetFit(encoder=encoder, n_way=2, body_max_steps=1).eval()
    model.bind_texts(Spy(corpus.texts))
    model.fit_episode(episode)
    assert seen and set(seen) <= support, "setfit read a text outside the support set while fitting"
    # Query texts are only read to predict them: other query rows do not change the fitted head.
    other = dataclasses.replace(episode, query_idx=episode.query_idx.flip(0), query_y=episode.query_y.flip(0))
    seen.clear()
    torch.testing.assert_close(model.episode_forward(other)[1].flip(0), model.episode_forward(episode)[1])
    # an episode's forward (refit on the support, then predict) reads its support and query rows, nothing else
    query = set(episode.query_idx.tolist())
    assert query <= set(seen) <= support | query
    assert "CoSENTLoss" not in caplog.text
    out, err = capfd.readouterr()  # no per-episode loss dicts or bars from setfit/datasets/sentence-transformers
    assert not any(word in out + err for word in ("embedding_loss", "Map:", "Batches:", "train_runtime")), out + err


def test_setfit_without_texts_says_how_to_bind_them(toy):
    _, encoder, ds = toy
    with pytest.raises(RuntimeError, match="bind_texts"):
        SetFit(encoder=encoder, n_way=2).episode_forward(ds[0])
