"""Phase timers injected into the measured MoE layers.

A layer brackets each phase with ``with timer.phase(name):``. ``NullTimer`` costs nothing;
``WallTimer`` synchronises the device around each phase and accumulates wall-clock seconds.
A shared timing primitive (warm-up, CUDA events, L2 flush) belongs to ``moesim.harness``; this is
only the per-phase breakdown of one forward pass.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch

#: Phase names, in the order an expert-parallel forward pass runs them.
PHASES = ("router", "permute", "dispatch", "experts", "combine", "unpermute", "shared_experts")


def _check_phase(name: str) -> None:
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; expected one of {', '.join(PHASES)}")


class NullTimer:
    """Records nothing."""

    def phase(self, name: str):
        _check_phase(name)
        return nullcontext()


NULL_TIMER = NullTimer()


class WallTimer:
    """Accumulates seconds per phase; ``synchronize`` the device before reading the clock.

    ``seconds``: phase name -> total seconds over all entries; ``calls``: phase -> entries;
    ``order``: phase names in order of first entry. ``clock`` is injectable (tests use a fake).
    """

    def __init__(self, device: torch.device | str | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.device = torch.device(device) if device is not None else None
        self.clock = clock
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.order: list[str] = []

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        _check_phase(name)
        self._sync()
        start = self.clock()
        try:
            yield
        finally:
            self._sync()
            elapsed = self.clock() - start
            if name not in self.seconds:
                self.order.append(name)
                self.seconds[name] = 0.0
                self.calls[name] = 0
            self.seconds[name] += elapsed
            self.calls[name] += 1

    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.order.clear()
