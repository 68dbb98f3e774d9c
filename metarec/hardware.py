"""What the machine can do fast, for configs that pick a precision by hardware.

bf16 autocast is ~3x faster than fp32 on a CPU with native bf16 instructions (AVX-512 BF16 or
AMX) and ~4x *slower* on one without (AVX2 only: bf16 is emulated). Configs that want the fast
one write ``precision: ${fast_bf16:bf16-mixed,32-true}``; :func:`register_resolvers` makes the
resolver known to OmegaConf, and the resolved value is what every run records.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf


def fast_bf16() -> bool:
    """Whether bf16 matmuls run natively here: a bf16-capable CUDA GPU, else the CPU's oneDNN check."""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    # torch's own CPU check (AVX-512 BF16 / AMX), the one its bf16 tests skip on.
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _pick(if_fast: Any, otherwise: Any) -> Any:
    return if_fast if fast_bf16() else otherwise


def register_resolvers() -> None:
    """``${fast_bf16:A,B}``: ``A`` where :func:`fast_bf16`, else ``B``."""
    if not OmegaConf.has_resolver("fast_bf16"):
        OmegaConf.register_new_resolver("fast_bf16", _pick)
