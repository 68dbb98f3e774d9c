"""Fine-tuning per episode: the pretrained encoder's trainable part + a new head, on the support set.

The conventional transfer-learning answer to a few-shot task (e.g. the "fine-tune" rows of
Chen et al., ICLR 2019, arXiv:1904.04232; Dhillon et al., ICLR 2020, arXiv:1909.02729, who
also initialize the head from the support prototypes). Every episode starts from the same
pretrained weights: the encoder is never modified, each episode trains its own copy.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.algorithms.base import MetaLearner
from metarec.algorithms.fitting import copy_top, fit_head, prototype_init, seeded, train_on_support
from metarec.data.sampler import stream_seed
from metarec.episode import Episode, Inputs
from metarec.models.heads import LinearHead
from metarec.registry import ALGORITHMS

HEAD_INITS = ("prototypes", "probe", "zeros")


@ALGORITHMS.register("finetune")
class FineTune(MetaLearner):
    """Per episode: fine-tune a copy of the encoder's trainable part and a new linear head.

    What trains follows the encoder's freeze policy: ``top_k`` fine-tunes the top ``k``
    layers on cached hidden states of the frozen layers below; ``full`` fine-tunes the whole
    model on token ids; ``frozen`` trains the head only. Each episode deep-copies
    :meth:`~metarec.models.encoder.TextEncoder.trainable_top`, trains the copy with AdamW on
    the full support set for ``steps`` steps, predicts the query set with it and drops it —
    the encoder's own weights are never written, so nothing leaks into the next episode. The
    copy and all fitting happen inside :meth:`episode_forward` and are timed in
    ``test/adapt_s``. ``trains = False``: no meta-training.

    Args:
        steps: optimizer steps per episode (full-batch on the support set).
        lr: AdamW learning rate of the encoder's trainable part.
        head_lr: AdamW learning rate of the head.
        head_init: ``"prototypes"`` (the head starts as the nearest-prototype rule, so the
            encoder gets gradient from the first step), ``"probe"`` (a logistic regression
            fitted on the pretrained support embeddings first: LP-FT, Kumar et al. 2022,
            arXiv:2202.10054) or ``"zeros"``.
        probe_l2: L2 penalty of the ``"probe"`` head init.
        dropout: keep the encoder's dropout on during the support steps (seeded per episode).
        seed: seeds dropout per episode (``stream_seed(seed, "finetune", episode.index)``).
        **kwargs: see :class:`MetaLearner`.
    """

    trains = False

    def __init__(
        self,
        steps: int = 20,
        lr: float = 5e-5,
        head_lr: float = 1e-2,
        head_init: str = "prototypes",
        probe_l2: float = 1e-3,
        dropout: bool = True,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if head_init not in HEAD_INITS:
            raise ValueError(f"{type(self).__name__} head_init must be one of {HEAD_INITS}, got {head_init!r}")
        if steps < 0:
            raise ValueError(f"{type(self).__name__} steps must be >= 0, got {steps}")
        self.steps = int(steps)
        self.lr = float(lr)
        self.head_lr = float(head_lr)
        self.head_init = head_init
        self.probe_l2 = float(probe_l2)
        self.dropout = bool(dropout)
        self.seed = int(seed)
        #: Support loss before every step of the last episode (tests and diagnostics).
        self.last_support_losses: list[float] = []

    # -- what adapts ------------------------------------------------------------------------
    def episode_top(self) -> tuple[Optional[nn.Module], list[nn.Parameter]]:
        """A fresh trainable copy of the encoder's top for one episode (:func:`copy_top`)."""
        return copy_top(self.encoder)

    def new_head(self, z: Tensor, y: Tensor, n_way: int) -> LinearHead:
        """A fresh head for the episode, initialized from support embeddings ``z`` ``(n, H)``."""
        head = LinearHead(z.shape[1], n_way).to(z.device)
        if self.head_init == "prototypes":
            prototype_init(head, z, y, n_way)
        elif self.head_init == "probe":
            fit_head(head, z, y, l2=self.probe_l2)
        return head

    def embed(self, x: Inputs, top: Optional[nn.Module]) -> Tensor:
        return self.encoder(x, top=top)

    # -- per episode ------------------------------------------------------------------------
    def fit_episode(self, episode: Episode) -> tuple[Optional[nn.Module], LinearHead]:
        """Fine-tunes a fresh copy of the top and a new head on the support set.

        Gradients of the last step are left on the parameters (tests inspect them);
        :meth:`episode_forward` clears them.
        """
        top, params = self.episode_top()
        y = episode.support_y
        with torch.enable_grad(), seeded(stream_seed(self.seed, type(self).__name__, episode.index), y.device):
            if top is not None:
                top.eval()
            with torch.no_grad():
                z0 = self.embed(episode.support_x, top).float()
            head = self.new_head(z0, y, episode.n_way)
            self.last_support_losses = train_on_support(self.encoder, top, params, episode.support_x, y, head,
                                                        self.steps, self.lr, self.head_lr, self.dropout)
        return top, head

    def episode_forward(self, episode: Episode) -> tuple[Tensor, Tensor]:
        top, head = self.fit_episode(episode)
        with torch.no_grad():
            logits = head(self.embed(episode.query_x, top))
        if top is not None:
            for p in top.parameters():
                p.grad = None
        return F.cross_entropy(logits.float(), episode.query_y), logits
