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

from moesim.calibration.fit import error_summary, fit_rate
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


def fixed_costs(recs: list[Record], launch_s: float) -> dict:
    """Per layer kernel and dtype: ``t = fixed_s + bytes / bytes_per_s`` fitted over token
    counts, and ``fixed_s`` in units of the launch overhead (``implied_launches``) next to the
    launches the cost model charges for that phase. A gap says the model's per-phase launch
    count undercounts the ops eager torch runs (see the report of ``moesim calibrate``)."""
    from moesim.calibration.fit import fit_alpha_beta

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
            fit = fit_alpha_beta([r.params["bytes"] for r in mine],
                                 [r.stats.median_s for r in mine])
            out[f"{kind}/{dtype}"] = {
                "fixed_s": fit.alpha_s, "bytes_per_s": fit.rate,
                "fit_error": error_summary(fit.predict(np.array([r.params["bytes"] for r in mine],
                                                                dtype=float)),
                                           [r.stats.median_s for r in mine]),
                "implied_launches": round(fit.alpha_s / launch_s, 1) if launch_s > 0 else None,
                "model_launches": charged[kind], "source": mine[0].kind}
    return out
