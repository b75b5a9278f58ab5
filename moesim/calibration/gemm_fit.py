"""GEMM efficiency per dtype as a table over M (tokens per expert), from dense GEMM records.

The cost model (``moesim.core.gemm.grouped_gemm``) predicts
``max(compute_s(eff=1) / eff(M), memory_s) + launches * launch_s``. For each measured point the
efficiency that reproduces it is ``eff_i = compute_s(eff=1) / (t_i - launch_s)``, computed with
the model's own tile/wave quantisation, so the table is read back exactly as it was fitted.

Memory-bound points: when the weights stream at a lower rate than the profile's memory bandwidth
(``memory_s < t_i``, the usual case), ``eff_i`` absorbs the streaming and the model reproduces
``t_i``. When ``memory_s > t_i`` no efficiency can help: the model over-predicts; such points are
counted (``memory_overpredicted``) and ``calibrate`` raises the memory bandwidth to the rate the
GEMMs achieved so that none remain (see ``stream_fit``).

The table is keyed where the model reads it (captured from ``grouped_gemm`` itself: today the
tile-padded tokens per expert, so all M inside one ``gemm_tile_m`` share a value); the value at
each key is the median of ``eff_i`` over shapes and M, clipped to (0, 1]. A clipped point means
the datasheet peak is low for this device (reported as ``clipped_at_1``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.calibration.fit import curve_table, error_summary, holdout_mask, interp_log
from moesim.config.dtypes import bytes_per_element
from moesim.core.gemm import DeviceLoad, grouped_gemm
from moesim.harness.records import Record


@dataclass(frozen=True)
class GemmDevice:
    """Profile numbers the GEMM cost reads: peaks (FLOP/s per dtype), units, tile, the effective
    memory bandwidth (bytes/s, efficiency applied) and the launch overhead (s)."""

    peaks: dict
    units: int
    tile_m: int
    tile_n: int
    mem_bytes_per_s: float
    launch_s: float
    call_fixed_s: dict = field(default_factory=dict)  # dtype -> per-call fixed cost (call_fit)


def model_terms(dev: GemmDevice, dtype: str, m, k, n, experts=1, grouped: bool = True):
    """``(compute_s at eff=1, memory_s, launches, x)`` arrays for ``experts`` experts of ``m``
    tokens each, ``[M, k] x [k, n]`` per expert; ``x`` is where the model reads the efficiency
    curve (captured from the model itself, e.g. tile-padded tokens per expert). ``launches``
    counts the per-call fixed cost of each expert call (``dev.call_fixed_s``) in launch units,
    so fixed time is ``launches * dev.launch_s`` throughout."""
    m, k, n = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=float)) for v in (m, k, n)))
    e = int(experts)
    counts = np.repeat(m[:, None], e, axis=1)
    hit = (counts > 0).astype(float)
    load = DeviceLoad.from_slots(counts, hit, np.zeros(e, dtype=int), 1, dev.tile_m)
    esize = bytes_per_element(dtype)
    seen = []

    def unit_eff(x):
        seen.append(np.array(x, dtype=float))
        return np.ones_like(x, dtype=float)

    cost = grouped_gemm(load, k, n, k * n * esize, (k + n) * esize,
                        peak_flops_per_s=dev.peaks[dtype], units=dev.units, tile_m=dev.tile_m,
                        tile_n=dev.tile_n, eff_gemm=unit_eff, mem_bytes_per_s=dev.mem_bytes_per_s,
                        eff_mem=1.0, launch_overhead_s=0.0, grouped=grouped)
    x = seen[-1][:, 0] if seen else m
    # launches, plus each expert call's fixed cost in launch units (efficiency.gemm_call)
    calls = load.experts_hit[:, 0] * dev.call_fixed_s.get(dtype, 0.0) / max(dev.launch_s, 1e-30)
    return cost.compute_s[:, 0], cost.memory_s[:, 0], cost.launches[:, 0] + calls, x


def _arrays(recs: list[Record]):
    get = lambda key: np.array([r.params[key] for r in recs], dtype=float)
    return get("m"), get("k"), get("n"), np.array([r.stats.median_s for r in recs])


def point_efficiency(dev: GemmDevice, dtype: str, recs: list[Record]) -> dict:
    m, k, n, t = _arrays(recs)
    compute, memory, launches, x = model_terms(dev, dtype, m, k, n)
    busy = np.maximum(t - launches * dev.launch_s, 0.05 * t)
    return {"x": x, "eff": compute / busy, "memory_over": memory > busy, "t": t}


def predict(dev: GemmDevice, dtype: str, table, m, k, n, experts=1, grouped=True) -> np.ndarray:
    compute, memory, launches, x = model_terms(dev, dtype, m, k, n, experts, grouped)
    eff = interp_log(table, x)
    return np.maximum(compute / eff, memory) + launches * dev.launch_s


@dataclass(frozen=True)
class GemmFit:
    tables: dict  # dtype -> [[M, eff], ...]
    quality: dict


def fit_gemm(dev: GemmDevice, recs: list[Record], every: int = 4) -> GemmFit:
    """Efficiency tables per dtype from all points; quality from a fit that held out every
    ``every``-th shape (k, n) and was evaluated on those shapes."""
    tables, quality = {}, {}
    for dtype in sorted({r.params["dtype"] for r in recs}):
        mine = [r for r in recs if r.params["dtype"] == dtype]
        pts = point_efficiency(dev, dtype, mine)
        tables[dtype] = curve_table(pts["x"], pts["eff"])
        held = holdout_mask([(r.params["k"], r.params["n"]) for r in mine], every)
        m, k, n, t = _arrays(mine)
        q = {"points": len(mine), "shapes": len({(r.params["k"], r.params["n"]) for r in mine}),
             "in_sample": error_summary(predict(dev, dtype, tables[dtype], m, k, n), t),
             "clipped_at_1": int(np.sum(pts["eff"] > 1.0)),
             "memory_overpredicted": int(np.sum(pts["memory_over"]))}
        if held.any() and (~held).any():
            train = [r for r, h in zip(mine, held) if not h]
            tp = point_efficiency(dev, dtype, train)
            table = curve_table(tp["x"], tp["eff"])
            q["holdout"] = error_summary(predict(dev, dtype, table, m[held], k[held], n[held]),
                                         t[held])
            q["holdout_shapes"] = sorted({f"{r.params['k']}x{r.params['n']}"
                                          for r, h in zip(mine, held) if h})
        quality[dtype] = q
    return GemmFit(tables, quality)


def check_grouped(dev: GemmDevice, tables: dict, recs: list[Record]) -> dict:
    """The fitted model against grouped-GEMM records (not used in the fit): per implementation
    (``grouped``: one launch; ``loop``: one launch per expert), the error summary."""
    out = {}
    for impl in sorted({r.params["impl"] for r in recs}):
        pred, meas = [], []
        for r in recs:
            p = r.params
            if p["impl"] != impl or p["dtype"] not in tables:
                continue
            pred.append(predict(dev, p["dtype"], tables[p["dtype"]], p["m"], p["k"], p["n"],
                                experts=p["experts"], grouped=impl == "grouped")[0])
            meas.append(r.stats.median_s)
        out[impl] = error_summary(pred, meas)
    return out


def max_stream_rate(recs: list[Record], launch_s: float) -> float | None:
    """The highest rate (bytes/s) at which any GEMM moved its weights and activations: a memory
    bandwidth at least this high leaves no point memory-bound in the model (see module doc)."""
    if not recs:
        return None
    rates = []
    for r in recs:
        p, t = r.params, r.stats.median_s
        nbytes = (p["k"] * p["n"] + p["m"] * (p["k"] + p["n"])) * bytes_per_element(p["dtype"])
        rates.append(nbytes / max(t - launch_s, 0.05 * t))
    return float(max(rates))
