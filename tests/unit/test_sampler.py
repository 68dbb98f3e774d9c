import pytest
import torch

from metarec.data.corpus import DataError
from metarec.data.sampler import EpisodeSampler, EpisodeSpec
from tests.conftest import toy_family


def _sampler(seed=0, n_way=3, n_shot=2, n_query=4, split="train", **kw):
    return EpisodeSampler(toy_family(**kw), split, EpisodeSpec(n_way, n_shot, n_query), seed)


def test_shapes_counts_and_disjoint():
    s = _sampler()
    fam = s.family
    for i in range(20):
        e = s.sample(i)
        assert e.support_idx.shape == (3 * 2,) and e.query_idx.shape == (3 * 4,)
        assert set(e.support_idx.tolist()).isdisjoint(e.query_idx.tolist())
        assert sorted(set(e.support_y.tolist())) == [0, 1, 2]
        assert torch.bincount(e.support_y).tolist() == [2, 2, 2]
        assert torch.bincount(e.query_y).tolist() == [4, 4, 4]
        assert len(set(e.classes)) == 3
        # Episode labels point at the right family class for every row.
        for rows, ys in ((e.support_idx, e.support_y), (e.query_idx, e.query_y)):
            for r, y in zip(rows.tolist(), ys.tolist()):
                assert fam.corpus.label_names[fam.corpus.labels[r]] == e.classes[y]
        # Only training classes appear in training episodes.
        assert {fam.corpus.labels[r] for r in e.support_idx.tolist()} <= set(range(5))


def test_same_seed_same_episodes_different_seed_different():
    a, b, c = _sampler(seed=1), _sampler(seed=1), _sampler(seed=2)
    ea = [a.sample(i) for i in range(10)]
    eb = [b.sample(i) for i in range(10)]
    ec = [c.sample(i) for i in range(10)]
    assert all(torch.equal(x.support_idx, y.support_idx) and torch.equal(x.query_idx, y.query_idx) for x, y in zip(ea, eb))
    assert any(not torch.equal(x.support_idx, y.support_idx) for x, y in zip(ea, ec))


def test_random_access_is_order_independent():
    s = _sampler(seed=3)
    forward = [s.sample(i).query_idx for i in range(6)]
    backward = [s.sample(i).query_idx for i in reversed(range(6))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward))


def test_sampling_does_not_touch_global_random_state():
    import random

    random.seed(42)
    expected = random.random()
    random.seed(42)
    _sampler().sample(0)
    assert random.random() == expected


def test_n_way_larger_than_classes_names_the_split():
    with pytest.raises(DataError, match=r"n_way=3 but family 'toy', split 'val'.* only 2 classes"):
        _sampler(n_way=3, split="val")


def test_too_few_examples_names_class_and_count():
    with pytest.raises(DataError, match=r"13 examples per class needed.*'class0' has 12"):
        _sampler(n_shot=5, n_query=8)


def test_bad_spec_values():
    with pytest.raises(DataError, match="n_shot must be a positive integer"):
        EpisodeSpec(2, 0, 3)
