"""The one timing primitive of moesim: ``bench`` (after DeepEP's ``deep_ep/utils/testing.py``).

``bench(fn, inputs)`` calls ``fn(inputs[i % len(inputs)])``, rotating through several input sets
so that caches do not flatter (each set holds its own random data; see ``rotation_count``):

1. warm-up: ``warmup`` calls, each timed; the fastest after the first sizes the run (a stall
   during warm-up must not cut the repeats short);
2. ``repeats`` timed calls, fewer if ``budget_s`` would be exceeded (never fewer than
   ``min_repeats``), plus one more whose sample is dropped (the first after warm-up);
3. returns ``Stats`` (median and spread) in seconds. Other load on the machine only ever adds
   time, so when the spread is wide (IQR > ``max_rel_iqr`` x median) the case is measured again,
   up to ``retries`` times, and the attempt with the lowest median is kept.

Timers: ``WallTimer`` (a clock, ``time.perf_counter`` by default, read after ``sync()``; tests
inject a fake clock) and ``CudaEventTimer`` (CUDA events around each call, one synchronise at the
end, as DeepEP does). Nothing here is specific to microbenchmarks: any harness may use ``bench``.

Inside one call, ``PhaseTimer`` times the phases of a MoE forward (``with timer.phase(name):``):
the same clock, read after the same device ``sync`` (:func:`device_sync`), so on a GPU a phase
is the time from the end of all earlier work to the end of its own kernels; ``NULL_TIMER``
records nothing.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from moesim.harness.stats import Stats


@dataclass(frozen=True)
class BenchConfig:
    """How long to measure: warm-up calls, the repeat range and a time budget (seconds)."""

    warmup: int = 3
    repeats: int = 30
    min_repeats: int = 5
    budget_s: float = 1.0
    retries: int = 2
    max_rel_iqr: float = 0.25

    def __post_init__(self):
        if self.warmup < 1 or self.min_repeats < 1 or self.repeats < self.min_repeats:
            raise ValueError(f"need warmup >= 1 and 1 <= min_repeats <= repeats, got {self}")
        if not self.budget_s > 0:
            raise ValueError(f"budget_s must be > 0, got {self.budget_s}")


QUICK = BenchConfig(warmup=3, repeats=25, min_repeats=7, budget_s=0.15)
FULL = BenchConfig(warmup=3, repeats=50, min_repeats=10, budget_s=1.0)


class WallTimer:
    """Times calls with ``clock`` (seconds); ``sync`` (e.g. ``torch.cuda.synchronize``) runs
    before each clock read; ``before`` runs untimed before each call (e.g. a barrier)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 sync: Callable[[], None] | None = None,
                 before: Callable[[], None] | None = None):
        self.clock = clock
        self.sync = sync or (lambda: None)
        self.before = before or (lambda: None)

    def time_calls(self, calls: Sequence[Callable[[], object]]) -> np.ndarray:
        out = np.empty(len(calls))
        for i, call in enumerate(calls):
            self.before()
            self.sync()
            start = self.clock()
            call()
            self.sync()
            out[i] = self.clock() - start
        return out


class CudaEventTimer:
    """Times calls with CUDA events on the current stream; one synchronise after all calls."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def time_calls(self, calls: Sequence[Callable[[], object]]) -> np.ndarray:
        cuda = self.torch.cuda
        with cuda.device(self.device):
            cuda.synchronize()
            events = [(cuda.Event(enable_timing=True), cuda.Event(enable_timing=True))
                      for _ in calls]
            for (start, end), call in zip(events, calls):
                start.record()
                call()
                end.record()
            cuda.synchronize()
        return np.array([s.elapsed_time(e) / 1e3 for s, e in events])  # ms -> s


def device_type(device) -> str:
    """``"cuda"`` or ``"cpu"`` of a ``torch.device`` or a spec such as ``"cuda:1"``."""
    return getattr(device, "type", str(device).split(":")[0])


def device_sync(device) -> Callable[[], None] | None:
    """What to call before reading a host clock so that the device's queued work is done:
    ``torch.cuda.synchronize(device)`` on a CUDA device, nothing on the CPU (its ops return when
    done)."""
    if device is None or device_type(device) != "cuda":
        return None
    import torch

    return partial(torch.cuda.synchronize, device)


def timer_for(device) -> WallTimer | CudaEventTimer:
    """CUDA events on a CUDA device, a synchronised wall clock otherwise."""
    if device_type(device) == "cuda":
        return CudaEventTimer(device)
    return WallTimer()


def _check_phase(name: str) -> None:
    from moesim.core.layer import PHASES

    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; expected one of {', '.join(PHASES)}")


class NullTimer:
    """Records nothing."""

    def phase(self, name: str):
        _check_phase(name)
        return nullcontext()


NULL_TIMER = NullTimer()


class PhaseTimer:
    """Seconds per phase of one forward pass, read with ``clock`` after ``sync`` on each side.

    ``seconds``/``calls``: phase -> total seconds / entries; ``order``: phases by first entry;
    ``first``/``last``: clock at the first phase's start and the last phase's end; ``marks``:
    for each phase in ``span_phases`` (the exchanges), (first entry, last exit). ``device``
    picks ``sync`` (:func:`device_sync`); tests inject a fake ``clock``.
    """

    def __init__(self, device=None, clock: Callable[[], float] = time.perf_counter,
                 sync: Callable[[], None] | None = None,
                 span_phases: tuple[str, ...] = ("dispatch", "combine")):
        self.clock, self.span_phases = clock, span_phases
        self.sync = sync or device_sync(device) or (lambda: None)
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.order: list[str] = []
        self.first: float | None = None
        self.last: float | None = None
        self.marks: dict[str, tuple[float, float]] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        _check_phase(name)
        self.sync()
        start = self.clock()
        self.first = start if self.first is None else self.first
        try:
            yield
        finally:
            self.sync()
            self.last = self.clock()
            if name not in self.seconds:
                self.order.append(name)
                self.seconds[name], self.calls[name] = 0.0, 0
            self.seconds[name] += self.last - start
            self.calls[name] += 1
            if name in self.span_phases:
                self.marks[name] = (self.marks.get(name, (start,))[0], self.last)

    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def planned_repeats(per_call_s: float, config: BenchConfig) -> int:
    """Repeats that fit ``budget_s`` at ``per_call_s`` each, within [min_repeats, repeats]."""
    if per_call_s <= 0:
        return config.repeats
    fit = math.floor(config.budget_s / per_call_s)
    return int(min(config.repeats, max(config.min_repeats, fit)))


def bench(fn: Callable[[object], object], inputs: Sequence[object],
          config: BenchConfig = QUICK, timer=None) -> Stats:
    """Median and spread of ``fn(inputs[i % len(inputs)])`` in seconds (see module doc)."""
    best = None
    for attempt in range(1, config.retries + 2):
        stats = Stats.from_samples(sample(fn, inputs, config, timer))
        if best is None or stats.median_s < best.median_s:
            best = stats
        if stats.rel_iqr <= config.max_rel_iqr:
            break
    return replace(best, attempts=attempt)


def sample(fn: Callable[[object], object], inputs: Sequence[object],
           config: BenchConfig = QUICK, timer=None) -> np.ndarray:
    """The raw samples behind ``bench`` (seconds, first post-warm-up sample dropped).

    Collectives need the same number of calls on every rank: give them a config with
    ``min_repeats == repeats``."""
    if not len(inputs):
        raise ValueError("bench needs at least one input set")
    timer = timer or WallTimer()
    position = [0]

    def calls(n: int) -> list[Callable[[], object]]:
        start, position[0] = position[0], position[0] + n
        return [partial(fn, inputs[i % len(inputs)]) for i in range(start, start + n)]

    warm = timer.time_calls(calls(config.warmup))
    per_call = float(np.min(warm[1:] if warm.size > 1 else warm))
    n = planned_repeats(per_call, config)
    return timer.time_calls(calls(n + 1))[1:]


def rotation_count(bytes_per_set: float, cache_bytes: float, *, min_sets: int = 2,
                   max_sets: int = 128) -> int:
    """Input sets to rotate so that their total exceeds twice the last-level cache."""
    if bytes_per_set <= 0:
        return min_sets
    need = math.ceil(2.0 * cache_bytes / bytes_per_set)
    return int(min(max_sets, max(min_sets, need)))
