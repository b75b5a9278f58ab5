"""Summary statistics of timing samples: a pure class, no torch (cf. pytest-benchmark's stats.py).

Every number is in seconds. The median is the estimate; the spread is reported both as the
inter-quartile range (q1..q3) and as p10..p90.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from moesim.config.errors import ConfigError

STAT_FIELDS = ("n", "median_s", "mean_s", "std_s", "min_s", "max_s", "q1_s", "q3_s", "p10_s",
               "p90_s")


@dataclass(frozen=True)
class Stats:
    """Summary of ``n`` timing samples, in seconds."""

    n: int
    median_s: float
    mean_s: float
    std_s: float
    min_s: float
    max_s: float
    q1_s: float
    q3_s: float
    p10_s: float
    p90_s: float
    attempts: int = 1  # measurements taken; the quietest (lowest median) is kept

    @classmethod
    def from_samples(cls, samples_s) -> Stats:
        """Statistics of a non-empty sequence of durations (seconds, each >= 0)."""
        x = np.asarray(samples_s, dtype=float).ravel()
        if x.size == 0:
            raise ValueError("no timing samples")
        if not np.all(np.isfinite(x)) or np.any(x < 0):
            raise ValueError(f"timing samples must be finite and >= 0, got {x.tolist()[:5]}")
        q = np.percentile(x, [10, 25, 50, 75, 90])
        return cls(n=int(x.size), median_s=float(q[2]), mean_s=float(x.mean()),
                   std_s=float(x.std(ddof=1)) if x.size > 1 else 0.0, min_s=float(x.min()),
                   max_s=float(x.max()), q1_s=float(q[1]), q3_s=float(q[3]), p10_s=float(q[0]),
                   p90_s=float(q[4]))

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s

    @property
    def rel_iqr(self) -> float:
        """IQR relative to the median: the run's noise level (0 = perfectly repeatable)."""
        return self.iqr_s / self.median_s if self.median_s > 0 else math.inf

    def scaled(self, factor: float) -> Stats:
        """Every duration times ``factor`` (e.g. ``1 / ops_per_sample``)."""
        return Stats(self.n, *(getattr(self, f) * factor for f in STAT_FIELDS[1:]),
                     attempts=self.attempts)

    def to_dict(self) -> dict:
        return {**asdict(self), "iqr_s": self.iqr_s}

    @classmethod
    def from_dict(cls, data, where: str = "stats", file: str | None = None) -> Stats:
        """Validated Stats from a JSON mapping; a bad field is a ConfigError naming it."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected a mapping with {', '.join(STAT_FIELDS)}, got "
                              f"{type(data).__name__}", file=file, field=where)
        values = {}
        for name in STAT_FIELDS:
            value = data.get(name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
                math.isfinite(value) and value >= (1 if name == "n" else 0)
            if not ok:
                need = "an integer >= 1" if name == "n" else "a finite number of seconds >= 0"
                raise ConfigError(f"expected {need}, got {value!r}", file=file,
                                  field=f"{where}.{name}")
            values[name] = int(value) if name == "n" else float(value)
        if not values["min_s"] <= values["median_s"] <= values["max_s"]:
            raise ConfigError("expected min_s <= median_s <= max_s", file=file, field=where)
        attempts = data.get("attempts", 1)
        if not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"expected an integer >= 1, got {attempts!r}", file=file,
                              field=f"{where}.attempts")
        return cls(**values, attempts=attempts)


def non_monotone(sizes, medians_s, slack: float = 1.3) -> list[int]:
    """Indices whose time exceeds ``slack`` x the fastest time at any larger size.

    Work that grows with size should not get faster; such points were most likely slowed by
    other load on the machine and deserve a second measurement."""
    order = np.argsort(np.asarray(sizes, dtype=float))
    t = np.asarray(medians_s, dtype=float)[order]
    later_min = np.minimum.accumulate(t[::-1])[::-1]
    bad = [int(order[i]) for i in range(len(t) - 1) if t[i] > slack * later_min[i + 1]]
    return sorted(bad)
