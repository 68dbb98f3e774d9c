import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_encoder


@pytest.mark.parametrize("policy", ["frozen", "top_k", "full"])
def test_only_trainable_parameters_change_after_a_step(policy):
    enc = tiny_encoder(freeze=policy, top_k=1)
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    if policy == "frozen":
        assert not trainable
        return
    head = torch.nn.Linear(enc.dim, 2)
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad] + list(head.parameters()), lr=0.5)
    x = enc.tokenize(["red shoes for running", "a blue kettle", "green phone case", "cheap lamp"])
    F.cross_entropy(head(enc(x)), torch.tensor([0, 1, 0, 1])).backward()
    opt.step()
    for n, p in enc.named_parameters():
        if n in trainable:
            continue
        assert torch.equal(p, before[n]), f"frozen parameter {n} changed"
    changed = [n for n in trainable if not torch.equal(dict(enc.named_parameters())[n], before[n])]
    assert changed, "no trainable parameter changed"
    if policy == "top_k":
        assert all(".layer.1." in n for n in trainable), sorted(trainable)
    if policy == "full":
        assert any("embeddings" in n for n in trainable)


def test_top_k_out_of_range():
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 2\]"):
        tiny_encoder(freeze="top_k", top_k=3)


def test_unknown_policy():
    with pytest.raises(ValueError, match="freeze must be one of"):
        tiny_encoder(freeze="partial")
