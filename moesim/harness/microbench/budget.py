"""Seconds, not FLOPs: how long each calibration section may run, and which points fit.

A CPU without AVX-512 or native bf16 can run a point 8x slower than the machine a plan was
written on (issue 12: 1.05 vs 8.9 GFLOP/s for bf16 vs fp32 on a Zen 3 core), so the suite
budgets wall-clock time. Each section gets a cap ``cap_s``; each point (one measured case) is

1. estimated before it starts from the points of its family already measured (a family is a
   section's kind of point in one dtype, ``work`` its size in FLOPs, bytes or tokens):
   ``t = a + b * work`` fitted to them within their range (a: set-up, warm-up and the timer's
   minimum repeats; b: the work; a, b >= 0), never below the nearest smaller point's time, and
   beyond the largest measured point that point's time; a point whose estimate
   exceeds the seconds left is skipped (a later, smaller one may still run). The estimate errs
   low rather than high (a low one costs one call, see 2; a high one loses a point);
2. checked after its first call (``guard`` / ``check``): ``first_s * calls`` (the fewest calls
   its measurement makes) over the seconds left stops it there.

Every skip is kept (``skipped``: point, reason, estimate, seconds left) and goes into the
written profile's provenance. The clock is injectable (tests use a fake one); nothing here
imports torch.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import numpy as np
from scipy.optimize import nnls

T = TypeVar("T")

#: Section caps in seconds. Quick: at most 170 s of measurement in all, so that ``--quick``
#: (imports and fits add ~5 s) stays within 3 minutes on any CPU; full: at most ~38 minutes.
QUICK_CAPS_S = {"ops": 15.0, "layer": 70.0, "copy": 8.0, "gemm": 42.0, "grouped": 12.0,
                "alltoall": 23.0}
FULL_CAPS_S = {"ops": 120.0, "layer": 600.0, "copy": 60.0, "gemm": 900.0, "grouped": 300.0,
               "alltoall": 300.0}


class OverBudget(Exception):
    """Raised inside a point when its first call says the rest would overrun the section."""

    def __init__(self, message: str, projected_s: float):
        super().__init__(message)
        self.projected_s = projected_s


@dataclass(frozen=True)
class Skip:
    section: str
    point: str
    reason: str
    estimated_s: float
    left_s: float


def scaled_caps(caps: dict[str, float], total_s: float | None) -> dict[str, float]:
    """``caps`` rescaled so that they sum to ``total_s`` (unchanged when None)."""
    if total_s is None:
        return dict(caps)
    if not total_s > 0:
        raise ValueError(f"a time budget must be > 0 s, got {total_s}")
    scale = total_s / sum(caps.values())
    return {k: v * scale for k, v in caps.items()}


@dataclass
class SectionBudget:
    """The seconds one section may still spend and what it has learned about its points."""

    name: str
    cap_s: float
    clock: Callable[[], float] = time.perf_counter
    on_point: Callable[[str, bool], None] | None = None  # (point, measured) after each point
    skipped: list[Skip] = field(default_factory=list)
    measured: int = 0
    _seen: dict = field(default_factory=dict)  # family -> [(work, seconds)]

    def __post_init__(self):
        self.started = self.clock()
        self._used_s: float | None = None

    def used_s(self) -> float:
        """Seconds since the section started (frozen by :meth:`finish`)."""
        return self._used_s if self._used_s is not None else self.clock() - self.started

    def left_s(self) -> float:
        return self.cap_s - self.used_s()

    def finish(self) -> float:
        self._used_s = self.clock() - self.started
        return self._used_s

    def estimate(self, family: str, work: float) -> float | None:
        """Seconds for a point of ``work`` from the measured points of ``family`` (None: none
        measured yet): within their range ``t = a + b * work`` fitted to all of them (a, b >= 0,
        relative least squares), at least the time of the nearest smaller point; beyond it the
        largest point's time (extrapolating noisy small points overshoots by orders of magnitude;
        the first-call check stops a point that is really slower)."""
        seen = sorted(self._seen.get(family, ()))
        if not seen:
            return None
        below = [t for w, t in seen if w <= work]
        floor = below[-1] if below else 0.0
        if work >= seen[-1][0]:  # beyond the largest: its time (the first call tells the rest)
            return seen[-1][1]
        if len({w for w, _ in seen}) < 2:  # one size: its time, scaled down for a smaller one
            w_ref, t_ref = seen[-1]
            return t_ref * min(1.0, work / w_ref) if w_ref > 0 else t_ref
        a, b = _line(np.array([w for w, _ in seen]), np.array([t for _, t in seen]))
        return max(a + b * work, floor)

    def attempt(self, point: str, family: str, work: float,
                thunk: Callable[[], T]) -> T | None:
        """``thunk()`` unless its estimate exceeds the seconds left or its first call says so
        (then None, and the skip is recorded)."""
        left, est = self.left_s(), self.estimate(family, work)
        if est is not None and est > left:
            return self._skip(point, f"estimated {est:.2f} s from earlier {family} points, "
                                     f"{max(left, 0):.2f} s left of {self.cap_s:.0f} s", est, left)
        if left <= 0:
            return self._skip(point, f"section time cap of {self.cap_s:.0f} s used up", 0.0, left)
        start = self.clock()
        try:
            out = thunk()
        except OverBudget as exc:
            self._seen.setdefault(family, []).append((work, exc.projected_s))
            return self._skip(point, str(exc), exc.projected_s, left)
        self._seen.setdefault(family, []).append((work, self.clock() - start))
        self.measured += 1
        if self.on_point:
            self.on_point(point, True)
        return out

    def check(self, first_s: float, calls: int) -> None:
        """Raise :class:`OverBudget` when ``calls`` more calls of ``first_s`` would overrun."""
        left, need = self.left_s(), first_s * calls
        if need > left:
            raise OverBudget(f"first call took {first_s:.3g} s; {calls} calls need {need:.2f} s, "
                             f"{max(left, 0):.2f} s left of {self.cap_s:.0f} s", need)

    def guard(self, fn: Callable, calls: int, sync: Callable[[], None] | None = None) -> Callable:
        """``fn`` timed on its first call (``sync``, e.g. a CUDA synchronise, before the clock
        is read), then :meth:`check` ed against ``calls`` calls."""
        state = {"first": True}

        def guarded(*args):
            if not state["first"]:
                return fn(*args)
            state["first"] = False
            start = self.clock()
            out = fn(*args)
            if sync is not None:
                sync()
            self.check(self.clock() - start, calls)
            return out

        return guarded

    def _skip(self, point: str, reason: str, est: float, left: float) -> None:
        self.skipped.append(Skip(self.name, point, reason, est, left))
        if self.on_point:
            self.on_point(point, False)
        return None


def _line(work: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """``(a, b) >= 0`` minimising ``sum(((a + b * w) / t - 1)^2)`` (``scipy.optimize.nnls``)."""
    t = np.maximum(seconds, 1e-12)
    sol, _ = nnls(np.stack([1.0 / t, work / t], axis=1), np.ones_like(t))
    return float(sol[0]), float(sol[1])


class Unlimited(SectionBudget):
    """No cap: every point runs (benchmarks/test_microbench.py, tests)."""

    def __init__(self):
        super().__init__("unlimited", float("inf"))


def skipped_table(budgets: list[SectionBudget]) -> list[dict]:
    """Every skip of a run as plain dicts (for provenance)."""
    return [asdict(s) for b in budgets for s in b.skipped]
