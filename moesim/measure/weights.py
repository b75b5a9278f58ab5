"""Deterministic weights and dtype names, shared by the single-device and expert-parallel layers.

Every matrix is drawn from its own seed, derived from ``(seed, kind, index)``, so a rank can build
only its own experts and still hold exactly the weights of the single-device layer.
"""
from __future__ import annotations

import math

import numpy as np
import torch

ROUTER, ROUTED_EXPERT, SHARED_EXPERT = 0, 1, 2

_TORCH_DTYPES = {
    "fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
    "float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """A moesim dtype name (``bf16``) or torch name (``float64``) as a ``torch.dtype``.

    fp8/fp4/int8 activations have no plain torch compute path here: a ValueError.
    """
    if isinstance(name, torch.dtype):
        return name
    if name not in _TORCH_DTYPES:
        raise ValueError(f"no torch compute dtype for {name!r}; expected one of "
                         f"{', '.join(_TORCH_DTYPES)}")
    return _TORCH_DTYPES[name]


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for 16-bit activations, float64 stays float64 (router scores, weighted combine)."""
    return torch.promote_types(dtype, torch.float32)


def seeded_normal(shape: tuple[int, ...], fan_in: int, seed: int, kind: int, index: int = 0,
                  dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``N(0, 1/fan_in)`` drawn on the CPU in float64 from seed ``(seed, kind, index)``.

    Drawing on the CPU in one precision makes the values independent of device and dtype.
    """
    state = np.random.SeedSequence([seed, kind, index]).generate_state(1, dtype=np.uint64)[0]
    gen = torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))
    values = torch.randn(shape, generator=gen, dtype=torch.float64) / math.sqrt(fan_in)
    return values.to(dtype=dtype, device=device)


def frozen(tensor: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(tensor, requires_grad=False)
