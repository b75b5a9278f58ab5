"""GEMM efficiency per dtype from the reference layer's expert FFNs, timed in place.

The cost model prices one FFN phase (``moesim.core.layer.phase_costs``: routed experts, or the
shared expert as a single expert holding every token) as

    t = sum_{g in up, down} [max(compute_g(eff=1) / eff(x), memory_g) + launches_g * launch_s]
        + act_bytes / act_bytes_per_s + act_kernels * launch_s

with ``x`` the tile-padded tokens per hit expert, plus ``2 * experts hit * c_call`` where the
profile has a per-call cost (``efficiency.gemm_call``, :mod:`moesim.calibration.call_fit`): the
table is fitted net of it. A record (``layer_experts`` /
``layer_shared_experts``, with its per-expert ``counts``) gives the efficiency that reproduces
it, ``eff_i = (compute_up + compute_down) / (t_i - launches - activation)``, read at the model's
own ``x``; the table is the median of ``eff_i`` per ``x`` (``fit.curve_table``). Dense GEMM
microbenchmarks alone miss what this path adds (the grouped kernel's per-expert work, the
unfused activation's cold temporaries): ``check_dense`` reports the gap both ways.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.calibration.fit import curve_table, error_summary, interp_log
from moesim.calibration.gemm_fit import GemmDevice
from moesim.config.dtypes import bytes_per_element
from moesim.core import gemm
from moesim.core.layer import ffn_gemms
from moesim.harness.records import Record

FFN_KINDS = ("layer_experts", "layer_shared_experts")


@dataclass(frozen=True)
class Streaming:
    """The activation kernel as the profile costs it: bytes/s (efficiency applied), kernels."""

    act_bytes_per_s: float
    act_kernels: float


def ffn_terms(dev: GemmDevice, stream: Streaming, dtype: str, counts, hidden: int, ffn: int,
              matrices: int, grouped: bool, eff=None) -> dict:
    """The model's terms for one FFN phase over ``counts`` rows per expert (one device):
    ``compute_s`` (both GEMMs at eff = 1), ``memory_s`` (both), ``fixed_s`` (launches and the
    activation), ``x`` (where the efficiency is read) and, given ``eff(x)``, ``time_s``."""
    c = np.asarray(counts, dtype=float).reshape(1, -1)
    hit = (c > 0).astype(float)
    load = gemm.DeviceLoad.from_slots(c, hit, np.zeros(c.shape[1], dtype=int), 1, dev.tile_m)
    a = bytes_per_element(dtype)
    up_n = (matrices - 1) * ffn
    seen = []

    def unit(x):
        seen.append(np.asarray(x, dtype=float))
        return np.ones_like(x, dtype=float)

    call_s = dev.call_fixed_s.get(dtype, 0.0)
    g1, g2 = ffn_gemms(load, hidden, ffn, matrices, a, a, peak_flops_per_s=dev.peaks[dtype],
                       units=dev.units, tile_m=dev.tile_m, tile_n=dev.tile_n, eff_gemm=unit,
                       mem_bytes_per_s=dev.mem_bytes_per_s, eff_mem=1.0,
                       launch_overhead_s=dev.launch_s, grouped=grouped, call_fixed_s=call_s)
    tokens = float(load.tokens[0, 0])
    act_launches = stream.act_kernels * (1.0 if grouped else float(load.experts_hit[0, 0]))
    act_s = (tokens * (up_n + ffn) * a / stream.act_bytes_per_s
             + (act_launches * dev.launch_s if tokens > 0 else 0.0))
    out = {"compute_s": float(g1.compute_s[0, 0] + g2.compute_s[0, 0]),
           "compute_up_s": float(g1.compute_s[0, 0]), "compute_down_s": float(g2.compute_s[0, 0]),
           "memory_up_s": float(g1.memory_s[0, 0]), "memory_down_s": float(g2.memory_s[0, 0]),
           "fixed_s": float((g1.launches + g2.launches)[0, 0] * dev.launch_s + act_s
                            + 2.0 * load.experts_hit[0, 0] * call_s),
           "x": float(seen[-1][0, 0])}
    if eff is not None:
        e = float(np.asarray(eff(np.array([out["x"]])))[0])
        out["time_s"] = (max(out["compute_up_s"] / e, out["memory_up_s"])
                         + max(out["compute_down_s"] / e, out["memory_down_s"]) + out["fixed_s"])
    return out


def _terms(dev, stream, grouped, recs: list[Record], eff=None) -> list[dict]:
    return [ffn_terms(dev, stream[r.params["dtype"]], r.params["dtype"], r.params["counts"],
                      r.params["hidden"], r.params["ffn"], r.params["matrices"], grouped, eff)
            for r in recs]


def point_efficiency(dev, stream, grouped, recs: list[Record]) -> tuple[np.ndarray, np.ndarray]:
    """``(x, eff)`` per record: the efficiency at which the model reproduces its time."""
    terms = _terms(dev, stream, grouped, recs)
    t = np.array([r.stats.median_s for r in recs])
    busy = np.maximum(t - np.array([d["fixed_s"] for d in terms]), 0.05 * t)
    return np.array([d["x"] for d in terms]), np.array([d["compute_s"] for d in terms]) / busy


def predict(dev, stream, grouped, table, recs: list[Record]) -> np.ndarray:
    eff = lambda x: interp_log(table, x)  # noqa: E731
    return np.array([d["time_s"] for d in _terms(dev, stream, grouped, recs, eff)])


@dataclass(frozen=True)
class FfnFit:
    tables: dict  # dtype -> [[x, eff], ...]
    quality: dict


def _shape(r: Record) -> tuple:
    p = r.params
    return p["hidden"], p["ffn"], p.get("experts", len(p["counts"])), p.get("top_k", 0)


def fit_ffn(dev: GemmDevice, stream: dict, grouped: bool, recs: list[Record]) -> FfnFit:
    """Efficiency tables per dtype from every FFN record (routed and shared); quality in
    sample, per kind, and held out: each calibration layer shape predicted by a fit on the
    others (``stream``: dtype -> :class:`Streaming`)."""
    tables, quality = {}, {}
    for dtype in sorted({r.params["dtype"] for r in recs}):
        mine = [r for r in recs if r.params["dtype"] == dtype]
        x, eff = point_efficiency(dev, stream, grouped, mine)
        tables[dtype] = curve_table(x, eff)
        t = np.array([r.stats.median_s for r in mine])
        pred = predict(dev, stream, grouped, tables[dtype], mine)
        q = {"points": len(mine), "in_sample": error_summary(pred, t),
             "clipped_at_1": int(np.sum(eff > 1.0))}
        for kind in FFN_KINDS:
            sel = np.array([r.kind == kind for r in mine])
            if sel.any():
                q[kind] = error_summary(pred[sel], t[sel])
        shapes = sorted({_shape(r) for r in mine})
        if len(shapes) > 1:
            held_pred, held_t, held_kind = [], [], []
            for shape in shapes:
                train = [r for r in mine if _shape(r) != shape]
                test = [r for r in mine if _shape(r) == shape]
                tx, te = point_efficiency(dev, stream, grouped, train)
                held_pred += list(predict(dev, stream, grouped, curve_table(tx, te), test))
                held_t += [r.stats.median_s for r in test]
                held_kind += [r.kind for r in test]
            q["holdout"] = error_summary(held_pred, held_t)
            for kind in FFN_KINDS:
                sel = [i for i, k in enumerate(held_kind) if k == kind]
                if sel:
                    q[f"holdout_{kind}"] = error_summary([held_pred[i] for i in sel],
                                                         [held_t[i] for i in sel])
            q["holdout_rule"] = ("each layer shape (hidden, ffn, experts, top_k) predicted by the "
                                 "table fitted on the other shapes")
            q["holdout_keyed_by_intensity"] = intensity_holdout(dev, stream, grouped, mine)
        quality[dtype] = q
    return FfnFit(tables, quality)


def intensity(x, hidden: int, ffn: int, matrices: int, act_bytes: float) -> np.ndarray:
    """Arithmetic intensity (FLOP/byte) of one expert's FFN at ``x`` rows: ``2 x m h f`` FLOPs
    over ``a (m h f + x (2 h + m f))`` bytes (weights, plus rows in and out of both GEMMs)."""
    x = np.asarray(x, dtype=float)
    m, h, f = matrices, hidden, ffn
    return 2.0 * x * m * h * f / (act_bytes * (m * h * f + x * (2.0 * h + m * f)))


def intensity_holdout(dev, stream, grouped, recs: list[Record]) -> dict:
    """The held-out-shape error when the efficiency is keyed by arithmetic intensity (a
    function of rows per expert AND the shape) instead of rows per expert, for comparison with
    ``holdout``; the profile's table stays keyed by rows per expert (what the model reads)."""
    x, eff = point_efficiency(dev, stream, grouped, recs)
    key = np.array([float(intensity(xi, r.params["hidden"], r.params["ffn"], r.params["matrices"],
                                    bytes_per_element(r.params["dtype"])))
                    for xi, r in zip(x, recs)])
    shapes = [_shape(r) for r in recs]
    pred = np.empty(len(recs))
    for shape in set(shapes):
        train = np.array([s != shape for s in shapes])
        table = curve_table(key[train], eff[train])
        for i in np.flatnonzero(~train):
            r = recs[i]
            pred[i] = ffn_terms(dev, stream[r.params["dtype"]], r.params["dtype"],
                                r.params["counts"], r.params["hidden"], r.params["ffn"],
                                r.params["matrices"], grouped,
                                lambda _x, k=key[i]: interp_log(table, [k]))["time_s"]
    return error_summary(pred, [r.stats.median_s for r in recs])


def check_dense(dev, stream, grouped, dense_tables: dict, recs: list[Record]) -> dict:
    """The expert FFN records predicted with the dense-GEMM table: what the dense
    microbenchmarks miss on the layer's path (bias < 0: they under-predict it)."""
    out = {}
    for dtype, table in dense_tables.items():
        mine = [r for r in recs if r.params["dtype"] == dtype]
        if mine:
            out[dtype] = error_summary(predict(dev, stream, grouped, table, mine),
                                       [r.stats.median_s for r in mine])
    return out


def streaming(phases: dict, peak_bytes_per_s: float, mem_eff: float, dtypes,
              base_kernels: float) -> dict:
    """dtype -> :class:`Streaming` from the ``efficiency.phases`` being written (fallbacks as
    ``moesim.predict`` has them: the memory efficiency and the base profile's kernel count)."""
    kernels = (phases or {}).get("kernels", {})
    effs = (phases or {}).get("memory_efficiency", {})
    out = {}
    for d in dtypes:
        e = effs.get(f"activation/{d}", effs.get("activation", mem_eff))
        k = kernels.get(f"activation/{d}", kernels.get("activation", base_kernels))
        out[d] = Streaming(peak_bytes_per_s * e, float(k))
    return out
