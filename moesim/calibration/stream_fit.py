"""Fixed per-op cost and memory bandwidth, from op-overhead, copy and layer-kernel records.

- ``launch_overhead_s``: the median over tiny ops (add, matmul, topk, index_add_ ...) of the
  seconds per op; on a CPU this is eager PyTorch's dispatch cost, on a GPU launch + tail.
- memory bandwidth: the cost model charges ``bytes / bandwidth + launches * launch_s`` for
  streaming phases, with the bytes of ``moesim.core.layer`` (a copy moves 2x its size). Three
  rates are measured: ``copy`` (large copy, read + write), ``stream`` (the layer's own permute,
  unpermute and activation kernels, fitted with the model's bytes and launch counts) and the rate
  at which small-M GEMMs stream expert weights. ``calibrate`` uses the ``source`` one, raised to
  at least the GEMM weight rate, because a bandwidth below what GEMMs achieve would make the
  model over-predict every weight-bound expert GEMM (a layer's largest cost at few tokens).
"""
from __future__ import annotations

import numpy as np

from moesim.calibration.fit import error_summary, fit_alpha_beta, fit_rate
from moesim.harness.records import Record

#: Launches the cost model charges per streaming phase (``moesim.core.layer.phase_costs``).
MODEL_LAUNCHES = {"copy": 1, "permute": 2, "unpermute": 2, "activation": 1}
STREAM_KINDS = ("permute", "unpermute", "activation")


def launch_overhead(recs: list[Record]) -> tuple[float, dict]:
    """Median seconds per op over the op-overhead records, and the per-op table."""
    if not recs:
        raise ValueError("no op_overhead records")
    per_op = {r.params["op"]: r.stats.median_s for r in recs}
    return float(np.median(list(per_op.values()))), per_op


def copy_rate(recs: list[Record], launch_s: float, min_size: float = 0.0) -> float | None:
    """Median bytes/s (read + written) of copies of at least ``min_size`` bytes (all if none)."""
    big = [r for r in recs if r.params.get("size_bytes", r.params["bytes"] / 2) >= min_size] or recs
    if not big:
        return None
    return float(np.median([r.params["bytes"] / max(r.stats.median_s - launch_s, 1e-12)
                            for r in big]))


def stream_rate(recs: list[Record], launch_s: float) -> float | None:
    """Bandwidth that best fits the layer's streaming kernels with the model's accounting."""
    mine = [r for r in recs if r.kind in STREAM_KINDS]
    if not mine:
        return None
    x = [r.params["bytes"] for r in mine]
    t = [r.stats.median_s for r in mine]
    fixed = [MODEL_LAUNCHES[r.kind] * launch_s for r in mine]
    try:
        return fit_rate(x, t, fixed)
    except ValueError:
        return None


def stream_errors(recs: list[Record], mem_bytes_per_s: float, launch_s: float) -> dict:
    """Model vs measured for each streaming kind at the chosen bandwidth."""
    out = {}
    for kind in ("copy",) + STREAM_KINDS:
        mine = [r for r in recs if r.kind == kind]
        if mine:
            pred = [r.params["bytes"] / mem_bytes_per_s + MODEL_LAUNCHES[kind] * launch_s
                    for r in mine]
            out[kind] = error_summary(pred, [r.stats.median_s for r in mine])
    return out


#: Physical bounds of the per-phase fits (assumptions, with their basis):
#: - at most ``MAX_PHASE_LAUNCHES`` launch overheads of fixed cost per phase: eager torch runs
#:   5-15 ops per phase (router: matmul, cast, softmax, topk, gather, sum, div; unpermute:
#:   zeros, casts, mul, index_add_), each a few tiny-op dispatches in a layer (allocation,
#:   type promotion); the Zen 4 fits of 2026-11 imply 19-68. A Zen 3 fit of 16,727 (issue 12)
#:   is the rate's error absorbed into the intercept; the fixed cost is also at most the
#:   smallest time measured;
#: - an effective streaming rate within [``MIN_COPY_FRACTION``, ``MAX_COPY_MULTIPLE``] x the
#:   same run's large-copy rate: the model's byte counts leave out fp32 accumulation and
#:   temporaries (unpermute/bf16 measured 6 % of the copy rate on Zen 4), and small token
#:   counts run from cache (above the DRAM copy rate);
#: - the 'stream' memory bandwidth at least ``MIN_STREAM_OF_COPY`` x the copy rate: below it
#:   the fit has absorbed fixed costs into the bandwidth (issue 12: 4.21 vs 19.5-22 GB/s).
MAX_PHASE_LAUNCHES = 100.0
MIN_COPY_FRACTION, MAX_COPY_MULTIPLE = 0.02, 4.0
MIN_STREAM_OF_COPY = 0.5


def phase_bounds(kind: str, times, launch_s: float, copy_bytes_per_s: float | None) -> dict:
    """Bounds of the fit ``t = fixed + bytes / rate`` for one phase (see the constants above);
    the router's rate is its GEMM's, which the model costs separately: no rate bound."""
    out = {"fixed_s_max": float(min(MAX_PHASE_LAUNCHES * launch_s, float(np.min(times))))}
    if copy_bytes_per_s and kind != "router":
        out["bytes_per_s_min"] = MIN_COPY_FRACTION * copy_bytes_per_s
        out["bytes_per_s_max"] = MAX_COPY_MULTIPLE * copy_bytes_per_s
    return out


def fixed_costs(recs: list[Record], launch_s: float,
                copy_bytes_per_s: float | None = None) -> dict:
    """Per layer kernel and dtype: ``t = fixed_s + bytes / bytes_per_s`` fitted over token
    counts within :func:`phase_bounds`, and ``fixed_s`` in units of the launch overhead
    (``implied_launches``) next to the launches the cost model charges for that phase. The
    unbounded fit is kept beside it; ``bound_hit`` names the bounds the fit rests on (where the
    data alone would leave them)."""
    charged = {**MODEL_LAUNCHES, "router": 3}
    out = {}
    for kind in ("router",) + STREAM_KINDS:
        for dtype in sorted({r.params.get("dtype") for r in recs
                             if r.kind in (kind, f"layer_{kind}")}):
            # the reference layer's own phases, where measured, beat the stand-alone kernels
            mine = [r for r in recs if r.kind == f"layer_{kind}" and r.params.get("dtype") == dtype]
            mine = mine or [r for r in recs if r.kind == kind and r.params.get("dtype") == dtype]
            if len({r.params["bytes"] for r in mine}) < 2:
                continue
            out[f"{kind}/{dtype}"] = _bounded_fit(kind, mine, launch_s, copy_bytes_per_s,
                                                  charged[kind])
    return out


def _bounded_fit(kind: str, mine: list[Record], launch_s: float, copy_bps, charged) -> dict:
    x = np.array([r.params["bytes"] for r in mine], dtype=float)
    t = np.array([r.stats.median_s for r in mine])
    bounds = phase_bounds(kind, t, launch_s, copy_bps)
    free = fit_alpha_beta(x, t)
    fit = fit_alpha_beta(x, t, alpha_max_s=bounds["fixed_s_max"],
                         rate_min=bounds.get("bytes_per_s_min", 0.0),
                         rate_max=bounds.get("bytes_per_s_max", np.inf))
    hit = [name for name, ok in (
        ("fixed_s_max", free.alpha_s > bounds["fixed_s_max"] * (1 + 1e-6)),
        ("bytes_per_s_min", free.rate < bounds.get("bytes_per_s_min", 0.0) * (1 - 1e-6)),
        ("bytes_per_s_max", free.rate > bounds.get("bytes_per_s_max", np.inf) * (1 + 1e-6)))
        if ok]
    launches = (lambda a: round(a / launch_s, 1) if launch_s > 0 else None)
    return {"fixed_s": fit.alpha_s, "bytes_per_s": fit.rate,
            "fit_error": error_summary(fit.predict(x), t),
            "implied_launches": launches(fit.alpha_s), "model_launches": charged,
            "source": mine[0].kind, "bounds": bounds, "bound_hit": hit,
            "unbounded": {"fixed_s": free.alpha_s, "bytes_per_s": free.rate,
                          "implied_launches": launches(free.alpha_s),
                          "fit_error": error_summary(free.predict(x), t)}}


def bound_violations(fits: dict) -> list[str]:
    """One line per per-phase fit that rests on a physical bound (for ``fit_quality``)."""
    out = []
    for key, fit in fits.items():
        for name in fit.get("bound_hit", []):
            free, b = fit["unbounded"], fit["bounds"]
            value = free["fixed_s"] if name == "fixed_s_max" else free["bytes_per_s"]
            out.append(f"{key}: unbounded fit {name.rsplit('_', 1)[0]} = {value:.4g} beyond "
                       f"{name} = {b[name]:.4g}; clipped to the bound")
    return out
