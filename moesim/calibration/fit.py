"""Generic fits and error summaries (pure numpy/scipy).

- ``fit_alpha_beta``: ``t = alpha + x / rate`` by least squares on relative residuals (each
  point weighted by 1/t, so microsecond latencies and second-long transfers count alike),
  alpha and rate within bounds (default alpha >= 0, rate > 0; ``scipy.optimize.lsq_linear``);
- ``curve_table``: per-x summary (median over shapes) of pointwise estimates -> [[x, y], ...];
- ``holdout_mask``: every ``every``-th group held out of a fit;
- ``error_summary``: mean/median/max absolute relative error of predictions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear


@dataclass(frozen=True)
class AlphaBeta:
    """``t = alpha_s + x / rate``; ``rate`` in x-units per second (bytes/s)."""

    alpha_s: float
    rate: float
    points: int

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return self.alpha_s + (x / self.rate if np.isfinite(self.rate) else 0.0 * x)


def fit_alpha_beta(x, t, *, alpha_max_s: float = np.inf, rate_min: float = 0.0,
                   rate_max: float = np.inf) -> AlphaBeta:
    """Least squares of ``t = alpha + beta * x`` on relative residuals with physical bounds
    ``0 <= alpha <= alpha_max_s`` and ``rate_min <= 1 / beta <= rate_max`` (bounded-variable
    least squares, ``scipy.optimize.lsq_linear``)."""
    x, t = np.asarray(x, dtype=float), np.asarray(t, dtype=float)
    if x.size < 2 or np.unique(x).size < 2:
        raise ValueError(f"need >= 2 distinct sizes to fit alpha and beta, got {x.size} points")
    if np.any(t <= 0):
        raise ValueError("times must be > 0")
    if not (0 <= rate_min < rate_max and alpha_max_s >= 0):
        raise ValueError(f"empty bounds: rate in [{rate_min}, {rate_max}], alpha <= {alpha_max_s}")
    a = np.stack([np.ones_like(x), x], axis=1) / t[:, None]
    lo = [0.0, 1.0 / rate_max if np.isfinite(rate_max) else 0.0]
    hi = [alpha_max_s if alpha_max_s > 0 else 1e-300,
          1.0 / rate_min if rate_min > 0 else np.inf]
    sol = lsq_linear(a, np.ones_like(t), bounds=(lo, hi), method="bvls")
    alpha, beta = (float(v) for v in sol.x)
    return AlphaBeta(alpha, 1.0 / beta if beta > 0 else np.inf, int(x.size))


def fit_rate(x, t, fixed_s=0.0) -> float:
    """Rate r minimising relative error of ``t = fixed_s + x / r`` (closed form, r > 0)."""
    x, t = np.asarray(x, dtype=float), np.asarray(t, dtype=float)
    fixed = np.broadcast_to(np.asarray(fixed_s, dtype=float), t.shape)
    # minimise sum(((fixed + x*b) / t - 1)^2) over b = 1/r
    u = x / t
    v = 1.0 - fixed / t
    b = float(np.dot(u, v) / np.dot(u, u))
    if not b > 0:
        raise ValueError("no positive rate fits these points (fixed costs exceed the times)")
    return 1.0 / b


def curve_table(x, y, *, lo: float = 1e-4, hi: float = 1.0) -> list[tuple[float, float]]:
    """``[[x, median of y at x], ...]`` sorted by x, values clipped to ``[lo, hi]``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out = []
    for value in np.unique(x):
        out.append((float(value), float(np.clip(np.median(y[x == value]), lo, hi))))
    return out


def interp_log(table: list[tuple[float, float]], x) -> np.ndarray:
    """The table at ``x``, interpolated in log(x), flat beyond the ends (as the profile does)."""
    pts = sorted(table)
    lx = np.log([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    return np.interp(np.log(np.maximum(np.asarray(x, dtype=float), 1e-30)), lx, ys)


def holdout_mask(groups, every: int = 4) -> np.ndarray:
    """True for points whose group is every ``every``-th of the sorted distinct groups
    (the 4th, 8th, ...), False for the rest; no group is held out when there are < 2."""
    keys = [tuple(g) if isinstance(g, (list, tuple, np.ndarray)) else (g,) for g in groups]
    distinct = sorted(set(keys))
    if len(distinct) < 2 or every < 2:
        return np.zeros(len(keys), dtype=bool)
    held = {g for i, g in enumerate(distinct) if i % every == every - 1}
    return np.array([k in held for k in keys], dtype=bool)


def error_summary(predicted, measured) -> dict:
    """Relative errors (predicted / measured - 1) in percent: mean |e|, median |e|, max |e|,
    mean e (bias), n."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.size == 0:
        return {"n": 0}
    e = p / m - 1.0
    return {"n": int(e.size), "mean_abs_pct": round(float(np.mean(np.abs(e))) * 100, 2),
            "median_abs_pct": round(float(np.median(np.abs(e))) * 100, 2),
            "max_abs_pct": round(float(np.max(np.abs(e))) * 100, 2),
            "bias_pct": round(float(np.mean(e)) * 100, 2)}
