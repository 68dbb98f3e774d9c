"""Per-episode fitting helpers shared by every method that adapts on a support set.

The linear probe, fine-tuning, LoRA, Baseline/Baseline++ and the ARSC recipe all fit something
new for each episode from the same pretrained weights; the pieces they share live here, not
inside one of them:

* :func:`fit_head` — a deterministic full-batch L-BFGS fit of a head on fixed embeddings
  (optionally with a Gaussian prior around a given head);
* :func:`prototype_init` — a linear head set to the nearest-prototype rule;
* :func:`seeded` — torch's global generators seeded per episode, restored afterwards;
* :func:`copy_top` — a throw-away trainable copy of the encoder's top for one episode;
* :func:`train_on_support` — full-batch AdamW of that copy and a head on the support set.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.episode import Inputs
from metarec.models.encoder import FreezePolicy
from metarec.models.heads import LinearHead, class_means


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
        center: parameter name → the value its penalty pulls towards (shapes of the parameters).

    Returns:
        The objective value at every closure evaluation (for inspection in tests).

    Raises:
        ValueError: for a ``center`` name that is not a parameter of ``head``.
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

    Args:
        head: the head to set, ``dim -> n_way``.
        z: support embeddings ``(n_way * n_shot, dim)``.
        y: episode labels ``(n_way * n_shot,)``.
        n_way: classes of the episode.
    """
    protos = class_means(z.detach().float(), y, n_way)
    with torch.no_grad():
        head.linear.weight.copy_(protos)
        head.linear.bias.copy_(-0.5 * protos.pow(2).sum(-1))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Runs the block with torch's global generators seeded by ``seed``, restored afterwards.

    Dropout and ``nn.init`` draw from the global generators; seeding them per episode makes an
    episode's result independent of which episodes ran before it (and of DDP sharding).
    """
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def copy_top(encoder: Any) -> tuple[Optional[nn.Module], list[nn.Parameter]]:
    """A fresh trainable copy of ``encoder``'s top for one episode, and what to optimize.

    The encoder's own weights are never written: the copy trains and is then dropped.

    Returns:
        ``(copy, its trainable parameters)``, or ``(None, [])`` for a frozen encoder
        (head-only fine-tuning).
    """
    if encoder.freeze is FreezePolicy.FROZEN:
        return None, []
    top = copy.deepcopy(encoder.trainable_top())
    return top, [p for p in top.parameters() if p.requires_grad]


def train_on_support(
    encoder: Any,
    top: Optional[nn.Module],
    params: list[nn.Parameter],
    x: Inputs,
    y: Tensor,
    head: nn.Module,
    steps: int,
    lr: float,
    head_lr: float,
    dropout: bool = True,
    penalty: Optional[Callable[[], Tensor]] = None,
) -> list[float]:
    """Full-batch AdamW on a support set: ``params`` of ``top`` at ``lr``, ``head`` at ``head_lr``.

    Minimizes ``cross-entropy(head(encoder(x, top)), y) (+ penalty())`` for ``steps`` steps,
    with ``top``'s dropout on when ``dropout``; ``top`` is left in eval mode. Seeding is the
    caller's (:func:`seeded`), and so is clearing the gradients the last step leaves.

    Args:
        encoder: the text encoder; ``encoder(x, top=top)`` embeds ``x`` through ``top``.
        top: the episode's copy of the trainable top (:func:`copy_top`), or ``None``.
        params: the parameters of ``top`` to train.
        x: support inputs (``n_way * n_shot`` rows).
        y: support labels ``(n_way * n_shot,)``.
        head: the episode's head, ``dim -> n_way``.
        steps: optimizer steps.
        lr: learning rate of ``params``.
        head_lr: learning rate of the head.
        dropout: train ``top`` with its dropout on.
        penalty: an extra term added to every step's loss (e.g. a pull towards a prior head).

    Returns:
        The support loss before every step.
    """
    groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": head_lr}]
    if params:
        groups.append({"params": params, "lr": lr})
    losses = []
    with torch.enable_grad():
        opt = torch.optim.AdamW(groups, weight_decay=0.0)
        if top is not None:
            top.train(dropout)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(encoder(x, top=top)).float(), y)
            if penalty is not None:
                loss = loss + penalty()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        if top is not None:
            top.eval()
    return torch.stack(losses).float().tolist() if losses else []
