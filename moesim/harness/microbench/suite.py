"""Run the whole microbenchmark suite for one device and collect its records."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

from moesim.harness.microbench.common import Context, dtype_works
from moesim.harness.microbench.plan import Plan
from moesim.harness.records import Measurements, Record

SECTIONS = ("ops", "layer", "copy", "gemm", "grouped", "alltoall")


def _log(msg: str) -> None:
    print(f"[calibrate] {msg}", file=sys.stderr, flush=True)


def _gemm(ctx: Context, plan: Plan, log) -> list[Record]:
    """Dense GEMM sweeps, ``plan.gemm_passes`` times over the shapes in alternating order; a
    point keeps its quietest pass (other load only ever slows a point, and a burst of it tends
    to hit one shape's whole M sweep, which a second pass at another time undoes)."""
    from moesim.harness.microbench.gemm import measure_dense

    best: dict = {}
    for p in range(plan.gemm_passes):
        for dtype in plan.dtypes:
            shapes = plan.gemm_shapes if p % 2 == 0 else plan.gemm_shapes[::-1]
            for shape in shapes:
                tokens = [m for s, m in plan.gemm_points(dtype) if s == shape]
                for rec in measure_dense(ctx, dtype, shape, tokens):
                    key = (dtype, shape.k, shape.n, rec.params["m"])
                    best[key] = rec if key not in best else _quieter(best[key], rec)
        log(f"gemm pass {p + 1}/{plan.gemm_passes}: {len(best)} points")
    return _recheck_slow(ctx, plan, list(best.values()), log)


def _quieter(old: Record, new: Record) -> Record:
    """The record with the lower median; attempts add up."""
    keep = min(old, new, key=lambda r: r.stats.median_s)
    attempts = old.stats.attempts + new.stats.attempts
    return replace(keep, stats=replace(keep.stats, attempts=attempts))


def slow_points(recs: list[Record], factor: float = 0.5) -> list[int]:
    """Indices of GEMM points below ``factor`` x the median FLOP rate of all shapes at the same
    dtype and M: most likely slowed by other load, worth a second measurement."""
    import numpy as np

    rate = [r.params["flops"] / r.stats.median_s for r in recs]
    groups: dict = {}
    for i, r in enumerate(recs):
        groups.setdefault((r.params["dtype"], r.params["m"]), []).append(i)
    slow = []
    for idx in groups.values():
        med = float(np.median([rate[i] for i in idx]))
        slow += [i for i in idx if rate[i] < factor * med]
    return sorted(slow)


def _recheck_slow(ctx: Context, plan: Plan, recs: list[Record], log) -> list[Record]:
    from moesim.harness.microbench.gemm import measure_dense

    slow = slow_points(recs)
    by_shape: dict = {}
    for i in slow:
        p = recs[i].params
        by_shape.setdefault((p["dtype"], p["k"], p["n"]), []).append(i)
    shapes = {(s.k, s.n): s for s in plan.gemm_shapes}
    for (dtype, k, n), idx in by_shape.items():
        again = measure_dense(ctx, dtype, shapes[(k, n)], [recs[i].params["m"] for i in idx],
                              recheck_passes=0)
        for i, new in zip(idx, again):
            recs[i] = _quieter(recs[i], new)
    if slow:
        log(f"gemm: measured {len(slow)} slow outlier point(s) again")
    return recs


def _grouped(ctx: Context, plan: Plan, log) -> list[Record]:
    from moesim.harness.microbench.gemm import measure_grouped

    out = [r for dtype in plan.dtypes for e, m, shape in plan.grouped
           for r in measure_grouped(ctx, dtype, e, m, shape)]
    log(f"grouped gemm: {len(out)} points")
    return out


def _ops(ctx: Context, plan: Plan, log) -> list[Record]:
    from moesim.harness.microbench.ops import measure_layer_ops, measure_op_overhead

    out = measure_op_overhead(ctx, plan.ops_per_sample)
    hidden, ffn, experts, top_k = plan.op_model
    for dtype in plan.dtypes:
        for tokens in plan.op_sizes:
            out += measure_layer_ops(ctx, dtype, tokens, hidden, ffn, experts, top_k)
    log(f"op overhead, router, permute, unpermute, activation: {len(out)} points")
    return out


def _layer(ctx: Context, plan: Plan, log) -> list[Record]:
    from moesim.harness.microbench.layer import (LAYER_MODEL, measure_layer_ffn,
                                                 measure_layer_phases)

    hidden, ffn, experts, top_k = LAYER_MODEL
    out = []
    for dtype in plan.dtypes:
        for tokens in plan.op_sizes:
            out += measure_layer_phases(ctx, dtype, tokens, hidden, ffn, experts, top_k)
    log(f"reference layer router, permute, unpermute: {len(out)} points")
    ffn_recs = [r for dtype in plan.dtypes for shape in plan.ffn_models
                for tokens in plan.ffn_tokens for r in measure_layer_ffn(ctx, dtype, tokens, *shape)]
    log(f"reference layer expert FFNs: {len(ffn_recs)} points")
    return out + ffn_recs


def _copy(ctx: Context, plan: Plan, log) -> list[Record]:
    from moesim.harness.microbench.ops import measure_copy

    out = [measure_copy(ctx, size) for size in plan.copy_bytes]
    log("copy: " + ", ".join(f"{r.params['size_bytes'] / 2**20:.0f} MiB "
                             f"{r.params['bytes'] / r.stats.median_s / 1e9:.1f} GB/s" for r in out))
    return out


def _alltoall(device, plan: Plan, log, workdir: Path) -> list[Record]:
    from moesim.harness.alltoall import launch_local

    if device.type == "cuda":
        import torch

        worlds = [w for w in plan.a2a_world_sizes if w <= torch.cuda.device_count()]
    else:
        worlds = list(plan.a2a_world_sizes)
    out = []
    for world in worlds:
        m = launch_local(world, workdir / f"alltoall-{world}.json", sizes=plan.a2a_bytes,
                         uneven_sizes=plan.a2a_uneven_bytes, hidden=plan.a2a_hidden,
                         dtype=plan.a2a_dtype, quick=plan.bench.budget_s < 0.5)
        out += m.records
        log(f"all-to-all, {world} ranks: {len(m.records)} cases")
    return out


def run_suite(device, plan: Plan, cache_bytes: float, sections=SECTIONS,
              log: Callable[[str], None] = _log, provenance: dict | None = None) -> Measurements:
    """Every section of ``plan`` on ``device``; returns records plus provenance."""
    from moesim.harness.device import device_facts

    dtypes = tuple(d for d in plan.dtypes if dtype_works(d, device))
    skipped = sorted(set(plan.dtypes) - set(dtypes))
    if skipped:
        log(f"dtypes not supported on {device}, skipped: {', '.join(skipped)}")
    plan = replace(plan, dtypes=dtypes)
    ctx = Context(device, plan.bench, cache_bytes)
    started = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="moesim-a2a-") as tmp:
        for name in sections:
            t0 = time.perf_counter()
            if name == "alltoall":
                records += _alltoall(device, plan, log, Path(tmp))
            else:
                records += {"ops": _ops, "layer": _layer, "copy": _copy, "gemm": _gemm,
                            "grouped": _grouped}[name](ctx, plan, log)
            log(f"{name} took {time.perf_counter() - t0:.1f} s")
    prov = {**(provenance or {}), "device_facts": device_facts(device),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "suite_seconds": round(time.perf_counter() - started, 1),
            "sections": list(sections), "dtypes": list(dtypes),
            "bench_config": asdict(plan.bench),
            "cache_bytes_rotated_past": cache_bytes, "load_average_1m_start": load_start}
    return Measurements(records, prov)
