import torch

from metarec.models.heads import LinearHead, PrototypeHead, class_means


def test_class_means():
    x = torch.tensor([[0.0, 0.0], [2.0, 2.0], [10.0, 0.0], [12.0, 2.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert torch.equal(class_means(x, y, 2), torch.tensor([[1.0, 1.0], [11.0, 1.0]]))


def test_protonet_logits_are_minus_squared_euclidean_distances():
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
    support_y = torch.tensor([0, 0, 1, 1])
    # prototypes: (1, 0) and (0, 5)
    query = torch.tensor([[1.0, 1.0], [3.0, 5.0]])
    expected = torch.tensor([
        [-(0.0**2 + 1.0**2), -(1.0**2 + 4.0**2)],
        [-(2.0**2 + 5.0**2), -(3.0**2 + 0.0**2)],
    ])
    logits = PrototypeHead()(query, support, support_y, 2)
    torch.testing.assert_close(logits, expected)


def test_zero_init_linear_head_is_uniform():
    head = LinearHead(4, 3)
    assert torch.equal(head(torch.randn(5, 4)), torch.zeros(5, 3))
