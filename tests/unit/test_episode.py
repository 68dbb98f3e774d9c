import torch

from metarec.episode import Episode, episode_set_fingerprint


def _ep(**kw):
    base = dict(support_x=torch.zeros(2, 3), support_y=torch.tensor([0, 1]), query_x=torch.zeros(2, 3),
                query_y=torch.tensor([1, 0]), classes=["a", "b"], family="f", task="t",
                support_idx=torch.tensor([3, 4]), query_idx=torch.tensor([5, 6]), corpus="c1")
    base.update(kw)
    return Episode(**base)


def test_fingerprint_ignores_model_inputs_but_not_data():
    a = _ep()
    assert a.fingerprint() == _ep(support_x=torch.ones(2, 3)).fingerprint()  # cached vs live inputs
    for change in (dict(corpus="c2"), dict(classes=["b", "a"]), dict(query_idx=torch.tensor([5, 7])),
                   dict(support_y=torch.tensor([1, 0])), dict(task="u")):
        assert _ep(**change).fingerprint() != a.fingerprint(), change


def test_episode_set_fingerprint_is_order_sensitive():
    assert episode_set_fingerprint(["a", "b"]) != episode_set_fingerprint(["b", "a"])


def test_to_device_keeps_everything():
    src = _ep(support_x={"input_ids": torch.ones(2, 5, dtype=torch.long)}, index=7)
    e = src.to("meta")  # a real move (the meta device holds shapes and dtypes, no data)
    assert e.support_x["input_ids"].device.type == "meta" and e.support_x["input_ids"].shape == (2, 5)
    assert e.query_x.device.type == "meta" and e.support_y.device.type == e.query_y.device.type == "meta"
    assert e.support_y.dtype == torch.long and e.query_x.shape == (2, 3)
    # indices stay on the CPU with their values; every other field is carried over
    assert torch.equal(e.support_idx, src.support_idx) and torch.equal(e.query_idx, src.query_idx)
    assert (e.classes, e.family, e.task, e.index, e.corpus) == (["a", "b"], "f", "t", 7, "c1")
