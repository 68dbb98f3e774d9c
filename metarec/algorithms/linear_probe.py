"""Linear probe: a logistic-regression head fitted on frozen support embeddings per episode.

The standard "frozen features + linear classifier" reference (e.g. Tian et al., ECCV 2020,
"Rethinking Few-Shot Image Classification: a Good Embedding Is All You Need?",
arXiv:2003.11539). Also home of :func:`fit_head`, the deterministic full-batch L-BFGS fit
shared by the other baselines that fit a fresh head on a support set.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.algorithms.base import MetaLearner
from metarec.episode import Episode
from metarec.models.heads import LinearHead, class_means
from metarec.registry import ALGORITHMS


def fit_head(head: nn.Module, z: Tensor, y: Tensor, l2: float = 0.0, max_iter: int = 100,
             center: Optional[dict[str, Tensor]] = None) -> list[float]:
    """Fits ``head`` in place on fixed embeddings by full-batch L-BFGS.

    Minimizes ``mean cross-entropy + l2 / 2 * sum ||weight||^2`` (biases and parameters not
    named ``*weight`` are not penalized). With ``center`` (parameter name → tensor), the
    penalty is ``l2 / 2 * sum ||p - center[p]||^2`` over exactly the named parameters: a
    Gaussian prior around a given head. Runs in fp32 outside autocast: L-BFGS line searches
    on bf16 losses stall.

    Args:
        head: a module mapping ``(n, dim)`` embeddings to ``(n, n_way)`` logits.
        z: support embeddings ``(n_way * n_shot, dim)`` (detached from the encoder).
        y: episode labels ``(n_way * n_shot,)``.
        l2: L2 penalty on the head's weights.
        max_iter: L-BFGS iterations.

    Returns:
        The objective value at every closure evaluation (for inspection in tests).
    """
    z = z.detach().float()
    params = [p for p in head.parameters() if p.requires_grad]
    if center is None:
        penalized = [(p, None) for n, p in head.named_parameters() if p.requires_grad and n.endswith("weight")]
    else:
        named = dict(head.named_parameters())
        unknown = sorted(set(center) - set(named))
        if unknown:
            raise ValueError(f"fit_head: center names {unknown} are not parameters of the head ({sorted(named)})")
        penalized = [(named[n], c.detach().float()) for n, c in center.items()]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=10,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)
    trace: list[float] = []

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(z), y)
        if l2 > 0:
            loss = loss + 0.5 * l2 * sum((p if c is None else p - c).pow(2).sum() for p, c in penalized)
        loss.backward()
        trace.append(float(loss.detach()))
        return loss

    with torch.enable_grad(), torch.autocast(z.device.type, enabled=False):
        opt.step(closure)
    return trace


def prototype_init(head: LinearHead, z: Tensor, y: Tensor, n_way: int) -> None:
    """Sets a linear head to the nearest-prototype rule (Triantafillou et al. 2020).

    ``argmax_c -||z - p_c||^2 = argmax_c (p_c . z - ||p_c||^2 / 2)``: weights ``p_c``, biases
    ``-||p_c||^2 / 2``. Unlike a zero head, it sends gradient to the encoder from step one.
    """
    protos = class_means(z.detach().float(), y, n_way)
    with torch.no_grad():
        head.linear.weight.copy_(protos)
        head.linear.bias.copy_(-0.5 * protos.pow(2).sum(-1))


@ALGORITHMS.register("linear_probe")
class LinearProbe(MetaLearner):
    """Frozen encoder; per episode an L2-regularized logistic regression on support embeddings.

    Nothing is meta-trained (``trains = False``): the pretrained encoder embeds support and
    query once, and a fresh multinomial logistic regression is fitted on the support set by
    L-BFGS inside :meth:`episode_forward`, so the fit counts in ``test/adapt_s``. The fit is
    deterministic (zero init, full batch): results depend only on the episode.

    Under ``freeze=frozen`` the inputs are cached pooled embeddings and an episode costs only
    the fit; under ``top_k`` / ``full`` the pretrained top layers run once per episode (the
    weights are the same, nothing is updated).

    Args:
        l2: L2 penalty on the head weights (per example: ``mean CE + l2/2 ||W||^2``).
        max_iter: L-BFGS iterations.
        normalize: L2-normalize embeddings before the fit (recommended by Tian et al.).
        **kwargs: see :class:`MetaLearner`.
    """

    trains = False

    def __init__(self, l2: float = 1e-3, max_iter: int = 100, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if l2 < 0:
            raise ValueError(f"linear_probe l2 must be >= 0, got {l2}")
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        self.normalize = bool(normalize)

    def embed(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Support and query embeddings of the pretrained encoder, fp32, no gradient."""
        with torch.no_grad():
            support, query = self.embed_episode(episode)
        support, query = support.float(), query.float()
        if self.normalize:
            support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
        return support, query

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        support, query = self.embed(episode)
        head = LinearHead(support.shape[1], episode.n_way).to(support.device)
        fit_head(head, support, episode.support_y, l2=self.l2, max_iter=self.max_iter)
        with torch.no_grad():
            logits = head(query)
        return F.cross_entropy(logits, episode.query_y), logits
