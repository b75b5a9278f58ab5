"""Per-call fixed cost of a GEMM, per dtype, from grouped GEMMs of small weights.

Each expert's GEMM in a grouped call (``torch._grouped_mm``, which on a CPU runs one matmul per
expert, or the per-expert loop) costs, per expert with rows,

    t_e = c_call + weight_bytes_e / bw + flops_e / rate

(``c_call``: kernel selection, packing and setup per call; a bf16 matmul on Zen 4 pays ~15 us of
it against ~0 in fp32, ``results/gemm-call-probe-cpu/``). The probe's points
(``harness.microbench.plan.CALL_SHAPES``: 64x128 to 256x512 weights, 1 and 16 experts, 1 and 4
rows each) make ``c_call`` most of the time; ``t_e = (t - launches * launch_s) / experts`` is
fitted by bounded least squares on relative residuals (``scipy.optimize.lsq_linear``), every term
>= 0 and ``c_call`` at most the smallest ``t_e`` (a fixed cost cannot exceed a measured call).
The cost model charges ``c_call`` per expert GEMM call with tokens (``efficiency.gemm_call``,
``moesim.core.gemm.grouped_gemm``), and the expert-FFN efficiency table is fitted net of it
(``ffn_fit``), so the table keeps the rate and the fixed cost carries to other expert sizes.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import lsq_linear

from moesim.calibration.fit import error_summary
from moesim.harness.microbench.plan import CALL_SOURCE
from moesim.harness.records import Record


def call_records(recs: list[Record], impl: str) -> list[Record]:
    """The per-call probe's grouped-GEMM records run the way the layer runs (``impl``)."""
    return [r for r in recs if r.kind == "grouped_gemm" and r.params.get("impl") == impl
            and str(r.params.get("source", "")).startswith(CALL_SOURCE)]


def fit_call_fixed(recs: list[Record], impl: str, launch_s: float) -> dict:
    """dtype -> ``{"fixed_s", "weight_bytes_per_s", "flops_per_s", "points", "fit_error",
    "bound_hit"}`` over :func:`call_records` (dtypes with fewer than 3 points are left out)."""
    out = {}
    mine = call_records(recs, impl)
    for dtype in sorted({r.params["dtype"] for r in mine}):
        rows = [r for r in mine if r.params["dtype"] == dtype]
        if len(rows) < 3:
            continue
        out[dtype] = _fit(rows, impl, launch_s)
    return out


def _fit(rows: list[Record], impl: str, launch_s: float) -> dict:
    e = np.array([r.params["experts"] for r in rows], dtype=float)
    launches = np.ones_like(e) if impl == "grouped" else e
    t = np.array([r.stats.median_s for r in rows])
    per = np.maximum(t - launches * launch_s, 0.05 * t) / e
    x = np.stack([np.ones_like(per),
                  np.array([r.params["weight_bytes"] for r in rows]) / e,
                  np.array([r.params["flops"] for r in rows]) / e], axis=1)
    ceiling = float(per.min())
    sol = lsq_linear(x / per[:, None], np.ones_like(per),
                     bounds=([0.0, 0.0, 0.0], [ceiling, np.inf, np.inf]), method="bvls")
    c, b, f = (float(v) for v in sol.x)
    free = lsq_linear(x / per[:, None], np.ones_like(per), bounds=(0.0, np.inf), method="bvls")
    return {"fixed_s": c, "weight_bytes_per_s": 1.0 / b if b > 0 else None,
            "flops_per_s": 1.0 / f if f > 0 else None, "points": len(rows),
            "fit_error": error_summary(x @ sol.x, per),
            "bound_hit": ["fixed_s_max"] if free.x[0] > ceiling * (1 + 1e-6) else []}


def profile_entry(fits: dict) -> dict | None:
    """``efficiency.gemm_call`` for the profile being written, or None without fits."""
    if not fits:
        return None
    parts = ", ".join(f"{d} {v['fixed_s'] * 1e6:.1f} us ({v['points']} points, fit "
                      f"{v['fit_error']['mean_abs_pct']:.0f} %)" for d, v in fits.items())
    return {"basis": "measured",
            "fixed_s": {d: float(f"{v['fixed_s']:.4g}") for d, v in fits.items()},
            "note": ("per expert GEMM call beyond the launch: intercept of t_e = c + "
                     "weight_bytes / bw + flops / rate per expert over grouped GEMMs of small "
                     f"weights (moesim.calibration.call_fit): {parts}")}
