"""MAML inner step against a hand-computed SGD step; FOMAML vs second-order outer gradients."""

import copy

import torch
import torch.nn.functional as F

from metarec.algorithms.maml import FOMAML, MAML
from metarec.episode import Episode
from tests.conftest import tiny_encoder


def _episode(dim=4, n_way=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(n_way * 3, dim, generator=g)
    qx = torch.randn(n_way * 3, dim, generator=g)
    y = torch.arange(n_way).repeat_interleave(3)
    return Episode(support_x=sx, support_y=y, query_x=qx, query_y=y, classes=["a", "b"], family="t")


def _model(cls, **kw):
    enc = tiny_encoder(freeze="frozen", hidden_size=4, num_heads=1)
    m = cls(encoder=enc, n_way=2, inner_lr=0.5, inner_steps=1, **kw)
    torch.manual_seed(0)
    torch.nn.init.normal_(m.head.linear.weight)  # non-zero so second-order terms matter
    return m


def test_one_inner_step_equals_hand_computed_sgd():
    m = _model(MAML)
    ep = _episode()
    w0 = m.head.linear.weight.detach().clone().requires_grad_(True)
    b0 = m.head.linear.bias.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(ep.support_x @ w0.T + b0, ep.support_y)
    gw, gb = torch.autograd.grad(loss, (w0, b0))
    w1, b1 = w0 - 0.5 * gw, b0 - 0.5 * gb

    learner = m.learner.clone()
    learner.adapt(F.cross_entropy(m._logits(learner, ep.support_x), ep.support_y))
    torch.testing.assert_close(learner.module.head.linear.weight, w1)
    torch.testing.assert_close(learner.module.head.linear.bias, b1)
    # the base model itself is untouched by adaptation
    torch.testing.assert_close(m.head.linear.weight, w0.detach())


def _outer_grad(cls):
    m = _model(cls)
    m.train()
    loss, _ = m.episode_forward(_episode())
    loss.backward()
    return m.head.linear.weight.grad.clone()


def test_fomaml_outer_gradient_differs_from_second_order():
    g2 = _outer_grad(MAML)
    g1 = _outer_grad(FOMAML)
    assert g1.shape == g2.shape
    assert not torch.allclose(g1, g2, atol=1e-6), "second-order terms should change the outer gradient"


def test_fomaml_gradient_is_query_gradient_at_adapted_weights():
    m = _model(FOMAML)
    ep = _episode()
    w0 = m.head.linear.weight.detach().clone().requires_grad_(True)
    b0 = m.head.linear.bias.detach().clone().requires_grad_(True)
    gw, gb = torch.autograd.grad(F.cross_entropy(ep.support_x @ w0.T + b0, ep.support_y), (w0, b0))
    w1 = (w0 - 0.5 * gw).detach().requires_grad_(True)
    b1 = (b0 - 0.5 * gb).detach()
    (expected,) = torch.autograd.grad(F.cross_entropy(ep.query_x @ w1.T + b1, ep.query_y), (w1,))
    m.train()
    loss, _ = m.episode_forward(ep)
    loss.backward()
    torch.testing.assert_close(m.head.linear.weight.grad, expected)


def test_proto_maml_head_starts_as_the_prototype_classifier():
    from metarec.models.heads import PrototypeHead

    enc = tiny_encoder(freeze="frozen", hidden_size=4, num_heads=1)
    m = MAML(encoder=enc, n_way=2, inner_lr=0.5, inner_steps=0, head_init="prototypes")
    m.eval()
    ep = _episode()
    _, logits = m.episode_forward(ep)
    proto = PrototypeHead()(ep.query_x, ep.support_x, ep.support_y, 2)
    # -||q - c||^2 = 2 q.c - ||c||^2 - ||q||^2: equal up to a per-query constant
    torch.testing.assert_close(logits - (ep.query_x**2).sum(-1, keepdim=True), proto, atol=1e-5, rtol=1e-5)


def test_fomaml_with_prototype_head_trains():
    m = _model(FOMAML, head_init="prototypes")
    m.train()
    ep = _episode()
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    losses = []
    for _ in range(5):  # outer steps on one episode: the first-order gradient lowers its query loss
        opt.zero_grad()
        loss, _ = m.episode_forward(ep)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses
