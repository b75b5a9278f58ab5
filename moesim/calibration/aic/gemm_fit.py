"""Fit the shape-aware GEMM efficiency grid from AIConfigurator's ``gemm_perf`` table.

One ``gemm_perf`` row: ``[m, k] x [k, n]`` in ``gemm_dtype`` timed by the engine's linear op
(``latency`` in ms). moesim prices the same GEMM with :func:`moesim.core.gemm.grouped_gemm`
(tile/wave quantisation, split-K, roofline); the measured efficiency is

    eff = compute_s(eff = 1) / (latency - launch_overhead_s)        clipped to (0, 1]

so the model reproduces the measurement at every fitted shape. Rows whose m, n and k are all
powers of two are the grid nodes (median per tile-padded M); every other row is left out and
predicted by interpolation (the fit quality). Rows timed with several kernels of the engine
(e.g. vLLM's DeepGEMM / CUTLASS / FlashInfer fp8-block) keep the fastest, the one a tuned engine
would pick.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.calibration.aic.dtypes import lookup
from moesim.core import gemm, layer

MIN_EFF = 1e-3


def _pow2(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    return (x > 0) & ((x & (x - 1)) == 0)


def best_kernel(df: pd.DataFrame, keys=("gemm_dtype", "m", "n", "k")) -> pd.DataFrame:
    """One row per shape: the fastest of the kernels the table timed it with."""
    return df.loc[df.groupby(list(keys), sort=False)["latency"].idxmin()].reset_index(drop=True)


def ideal_times(profile, dtype: str, m, n, k) -> tuple[np.ndarray, np.ndarray]:
    """moesim's compute (at efficiency 1) and memory time of dense GEMMs ``[rows]``."""
    d = lookup(dtype)
    m, n, k = (np.asarray(v, dtype=float) for v in (m, n, k))
    c = profile.compute
    load = layer.dense_load(m, c.gemm_tile_m)
    cost = gemm.grouped_gemm(
        load, k, n, k * n * d.weight_bytes, k * d.act_bytes + n * 2.0,
        peak_flops_per_s=profile.peak_flops_per_s(d.peak), units=c.units, tile_m=c.gemm_tile_m,
        tile_n=c.gemm_tile_n, eff_gemm=lambda x: np.ones_like(x),
        mem_bytes_per_s=profile.memory.bandwidth_bytes_per_s,
        eff_mem=float(profile.efficiency.memory_bandwidth.at(1.0)), launch_overhead_s=0.0)
    return cost.compute_s[:, 0], cost.memory_s[:, 0]


def launch_floor_s(df: pd.DataFrame, dtype: str = "bfloat16") -> float:
    """Fixed cost of one GEMM call in ``dtype``: 10th percentile of its GEMMs with
    n * k <= 65 536 (tiny GEMMs whose work is far below a microsecond). bf16 is the kernel
    launch under CUDA graphs; quantised dtypes add their per-call activation quantisation."""
    rows = df[df.gemm_dtype == dtype]
    small = rows[rows.n * rows.k <= 65536]
    src = small if len(small) else (rows if len(rows) else df)
    return float(np.percentile(src.latency, 10)) * 1e-3


def dtype_floors_s(df: pd.DataFrame) -> dict[str, float]:
    return {d: launch_floor_s(df, d) for d in sorted(df.gemm_dtype.unique())}


def measured_eff(profile, dtype, rows: pd.DataFrame, launch_s: float) -> np.ndarray:
    compute_s, _ = ideal_times(profile, dtype, rows.m, rows.n, rows.k)
    busy = np.maximum(rows.latency.to_numpy() * 1e-3 - launch_s, 1e-9)
    return np.clip(compute_s / busy, MIN_EFF, 1.0)


def _grid(profile, nodes: pd.DataFrame, eff: np.ndarray) -> dict:
    tile = profile.compute.gemm_tile_m
    m_pad = np.ceil(nodes.m.to_numpy() / tile) * tile
    cells = pd.DataFrame({"m": m_pad, "n": nodes.n.to_numpy(), "k": nodes.k.to_numpy(),
                          "log_eff": np.log(eff)})
    cube = cells.groupby(["m", "n", "k"])["log_eff"].median()
    m_ax, n_ax, k_ax = (sorted(cube.index.get_level_values(a).unique()) for a in "mnk")
    full = cube.reindex(pd.MultiIndex.from_product([m_ax, n_ax, k_ax], names=list("mnk")))
    arr = full.to_numpy().reshape(len(m_ax), len(n_ax), len(k_ax))
    arr = _fill(arr)
    return {"m": [float(v) for v in m_ax], "n": [float(v) for v in n_ax],
            "k": [float(v) for v in k_ax],
            "values": np.round(np.clip(np.exp(arr), MIN_EFF, 1.0), 4).tolist()}


def _fill(arr: np.ndarray) -> np.ndarray:
    """Missing cells: the nearest measured M at the same (N, K), else the table's median."""
    out = arr.copy()
    for j in range(arr.shape[1]):
        for kk in range(arr.shape[2]):
            col = out[:, j, kk]
            have = np.flatnonzero(~np.isnan(col))
            if have.size and have.size < col.size:
                near = have[np.abs(np.arange(col.size)[:, None] - have[None, :]).argmin(1)]
                out[:, j, kk] = col[near]
    out[np.isnan(out)] = np.nanmedian(arr)
    return out


def errors_pct(pred_s, meas_s) -> dict:
    err = 100.0 * (np.asarray(pred_s) / np.asarray(meas_s) - 1.0)
    if err.size == 0:
        return {"rows": 0}
    mape = round(float(np.mean(np.abs(err))), 2)
    return {"rows": int(err.size), "mape_pct": mape, "mean_abs_pct": mape,
            "median_abs_pct": round(float(np.median(np.abs(err))), 2),
            "p90_abs_pct": round(float(np.percentile(np.abs(err), 90)), 2),
            "bias_pct": round(float(np.median(err)), 2)}


def predict_s(profile, dtype: str, grid_eff, rows: pd.DataFrame, launch_s: float) -> np.ndarray:
    """Dense GEMM time with an efficiency ``grid_eff(m_padded, n, k)``."""
    compute_s, memory_s = ideal_times(profile, dtype, rows.m, rows.n, rows.k)
    tile = profile.compute.gemm_tile_m
    m_pad = np.ceil(rows.m.to_numpy() / tile) * tile
    eff = grid_eff(m_pad, rows.n.to_numpy(float), rows.k.to_numpy(float))
    return np.maximum(compute_s / eff, memory_s) + launch_s


def fit_gemm(profile, df: pd.DataFrame, floors_s: dict | float) -> tuple[dict, dict]:
    """Per AIC dtype: (grid dict for ``efficiency.gemm.grid``, fit quality dict).

    ``floors_s``: fixed cost per call per AIC dtype (or one for all), taken off each measured
    latency before the efficiency is computed, so the grid holds the kernels' throughput and
    a grouped kernel does not pay a dense call's fixed cost once per expert."""
    from moesim.config.hardware import ShapeGrid

    df = best_kernel(df)
    grids, quality = {}, {}
    for dtype, rows in df.groupby("gemm_dtype"):
        launch_s = floors_s if isinstance(floors_s, float) else floors_s[dtype]
        node = _pow2(rows.m) & _pow2(rows.n) & _pow2(rows.k)
        nodes, held = rows[node], rows[~node]
        if len(nodes) < 8:
            continue
        key = lookup(dtype).key
        grids[key] = _grid(profile, nodes, measured_eff(profile, dtype, nodes, launch_s))
        shape = ShapeGrid.model_validate(grids[key])
        quality[key] = {
            "in_sample": errors_pct(predict_s(profile, dtype, shape.at, nodes, launch_s),
                                    nodes.latency.to_numpy() * 1e-3),
            "holdout": errors_pct(predict_s(profile, dtype, shape.at, held, launch_s),
                                  held.latency.to_numpy() * 1e-3),
            "holdout_rule": "rows with m, n or k not a power of two (interpolated)",
            "kernels": sorted(rows.kernel_source.unique().tolist()),
            "fixed_cost_s": round(launch_s, 9),
        }
    return grids, quality


def transfer_grid(profile, grid: dict, src: str, dst: str) -> dict:
    """The grid of a dtype without a dense table (weight-only int4 / MXFP4) from the grid of the
    dtype it computes in, assuming the kernel reaches the same fraction ``e`` of its roofline:

        e = max(C_src, M_src) * eff_src / C_src,   eff_dst = C_dst * e / max(C_dst, M_dst)

    (C, M: moesim's compute time at efficiency 1 and memory time of each node's GEMM), so a
    memory-bound node of the 4-bit format is faster by its smaller weights, not by a bf16 time."""
    m, n, k = (np.array(v, dtype=float) for v in np.meshgrid(grid["m"], grid["n"], grid["k"],
                                                             indexing="ij"))
    shape = m.shape
    c_src, m_src = (v.reshape(shape) for v in ideal_times(profile, src, m.ravel(), n.ravel(), k.ravel()))
    c_dst, m_dst = (v.reshape(shape) for v in ideal_times(profile, dst, m.ravel(), n.ravel(), k.ravel()))
    e = np.maximum(c_src, m_src) * np.asarray(grid["values"], dtype=float) / c_src
    eff = np.clip(c_dst * e / np.maximum(c_dst, m_dst), MIN_EFF, 1.0)
    return {**grid, "values": np.round(eff, 4).tolist()}
