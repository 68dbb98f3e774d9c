"""LoRA per episode (Hu et al., ICLR 2022, arXiv:2106.09685) via the ``peft`` library."""

from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import torch
from torch import nn

from metarec.algorithms.finetune import FineTune
from metarec.algorithms.fitting import seeded
from metarec.models.encoder import FreezePolicy
from metarec.registry import ALGORITHMS


@ALGORITHMS.register("lora")
class LoRA(FineTune):
    """Per episode: low-rank adapters on the attention projections + a new head, on the support set.

    How it meets the freeze policy: LoRA adapts the layers the policy makes trainable —

    * ``top_k``: adapters on the top ``k`` layers only, which run on cached hidden states of
      the frozen layers below (as fine-tuning and MAML do; the cheap setting);
    * ``full``: adapters on every layer, on token ids;
    * ``frozen``: rejected (cached pooled embeddings leave no layer to adapt).

    At construction the trainable top is copied once, its weights frozen and ``peft``'s
    LoRA layers injected into ``target_modules`` (``query`` / ``value`` of BERT-like
    attention). The encoder itself is never modified: its weights, and the copy's base
    weights, are bit-identical after any number of episodes. Every episode restores the
    adapters to one seeded initial state (``A`` Kaiming-uniform, ``B = 0``, so the adapted
    model starts as the pretrained one) and trains only adapters + a new head, with the
    optimizer, head initialization and step count of :class:`FineTune`.

    Args:
        rank: LoRA rank ``r``.
        alpha: LoRA ``lora_alpha`` (the update is scaled by ``alpha / rank``).
        lora_dropout: dropout on the adapter input.
        target_modules: names of the linear layers that get adapters.
        lr: AdamW learning rate of the adapters (see :class:`FineTune` for the rest).
        **kwargs: see :class:`FineTune` and :class:`~metarec.algorithms.base.MetaLearner`.
    """

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        lora_dropout: float = 0.0,
        target_modules: Sequence[str] = ("query", "value"),
        lr: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(lr=lr, **kwargs)
        from peft import LoraConfig, inject_adapter_in_model

        if self.encoder.freeze is FreezePolicy.FROZEN:
            raise ValueError(
                "lora needs trainable encoder layers to adapt: use encoder.freeze=top_k (adapters on the "
                "top k layers, cached states below) or encoder.freeze=full, not 'frozen'"
            )
        if rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {rank}")
        self.rank = int(rank)
        self.alpha = float(alpha)
        top = copy.deepcopy(self.encoder.trainable_top())
        for p in top.parameters():
            p.requires_grad_(False)
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=float(lora_dropout),
                            target_modules=list(target_modules), bias="none")
        with seeded(self.seed, torch.device("cpu")):
            try:
                inject_adapter_in_model(config, top)
            except ValueError as e:
                names = sorted({n.rsplit(".", 1)[-1] for n, m in top.named_modules() if isinstance(m, nn.Linear)})
                raise ValueError(f"lora target_modules={list(target_modules)} match no layer of {self.encoder.identity} "
                                 f"(its linear layers are named {names}): {e}") from None
        self.lora_top = top
        adapters = self.adapters()
        if not adapters or any(not p.requires_grad for p in adapters):
            raise RuntimeError(f"peft injected no trainable LoRA parameters into {self.encoder.identity}")
        # One initial adapter state for every episode, kept on the CPU (copy_ moves it).
        self._adapter_init = [p.detach().cpu().clone() for p in adapters]

    def adapters(self) -> list[nn.Parameter]:
        """The LoRA parameters (``lora_A`` / ``lora_B`` of every adapted projection)."""
        return [p for n, p in self.lora_top.named_parameters() if "lora_" in n]

    def episode_top(self) -> tuple[Optional[nn.Module], list[nn.Parameter]]:
        adapters = self.adapters()
        with torch.no_grad():
            for p, init in zip(adapters, self._adapter_init):
                p.copy_(init)
        return self.lora_top, adapters
