"""Shared helpers: dtype names, random input sets, the measurement context."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from moesim.harness.microbench.budget import SectionBudget, Unlimited
from moesim.harness.stats import Stats
from moesim.harness.timing import BenchConfig, bench, timer_for

#: moesim dtype name -> torch dtype, for the dtypes torch computes GEMMs in directly.
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Context:
    """Where and how to measure: device, timing config, last-level cache size (rotation), and
    the time budget of the section being measured (``budget``, replaced per section)."""

    device: torch.device
    config: BenchConfig
    cache_bytes: float
    seed: int = 0
    budget: SectionBudget = field(default_factory=Unlimited)

    def __post_init__(self):
        self.timer = timer_for(self.device)
        self.gen = torch.Generator(device="cpu").manual_seed(self.seed)

    def randn(self, *shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Standard normal values (never zeros), drawn on the CPU, moved to the device."""
        return torch.randn(*shape, generator=self.gen).to(device=self.device, dtype=dtype)

    def randint(self, high: int, *shape) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=self.gen).to(self.device)

    def sets(self, first: torch.Tensor, count: int) -> list[torch.Tensor]:
        """``count`` tensors at distinct addresses: ``first`` and perturbed copies of it."""
        out = [first]
        for i in range(1, count):
            out.append(first * (1.0 + 1e-3 * i))
        return out

    def bench(self, fn, inputs) -> Stats:
        """``timing.bench`` of ``fn`` under the section budget: its first call is checked
        against the fewest calls ``bench`` makes (warm-up, ``min_repeats``, the dropped one)."""
        calls = self.config.warmup + self.config.min_repeats + 1
        return bench(self.budget.guard(fn, calls, self.sync), inputs, self.config, self.timer)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def torch_dtype(name: str) -> torch.dtype:
    if name not in TORCH_DTYPES:
        raise ValueError(f"no torch GEMM dtype for '{name}'; expected one of "
                         f"{', '.join(TORCH_DTYPES)}")
    return TORCH_DTYPES[name]


def dtype_works(name: str, device: torch.device) -> bool:
    """Whether a small matmul in this dtype runs on the device."""
    if name not in TORCH_DTYPES:
        return False
    try:
        a = torch.ones(4, 4, dtype=TORCH_DTYPES[name], device=device)
        (a @ a).sum().item()
        return True
    except (RuntimeError, TypeError):
        return False
