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

from moesim.harness.microbench.budget import OverBudget, SectionBudget, skipped_table
from moesim.harness.microbench.common import Context, dtype_works
from moesim.harness.microbench.plan import Plan
from moesim.harness.records import Measurements, Record

SECTIONS = ("ops", "layer", "copy", "gemm", "grouped", "alltoall")


def _log(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"[calibrate] {msg}", file=sys.stderr)


def _gemm(ctx: Context, plan: Plan, log) -> list[Record]:
    """Dense GEMM sweeps, ``plan.gemm_passes`` times over the shapes in alternating order; a
    point keeps its quietest pass (other load only ever slows a point, and a burst of it tends
    to hit one shape's whole M sweep, which a second pass at another time undoes)."""
    from moesim.harness.microbench.gemm import measure_dense

    best: dict = {}
    for p in range(plan.gemm_passes):
        shapes = plan.gemm_shapes if p % 2 == 0 else plan.gemm_shapes[::-1]
        for shape in shapes:
            for dtype in plan.dtypes:  # dtypes alternate: a slow one cannot starve the other
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

    out = []
    for e, m, shape in sorted(plan.grouped, key=lambda p: p[0] * p[1] * p[2].k * p[2].n):
        for dtype in plan.dtypes:
            out += ctx.budget.attempt(
                f"grouped {dtype} {e}x{m} {shape.key}", f"grouped/{dtype}",
                2.0 * e * m * shape.k * shape.n,
                lambda: measure_grouped(ctx, dtype, e, m, shape)) or []
    log(f"grouped gemm: {len(out)} points")
    return out


def _ops(ctx: Context, plan: Plan, log) -> list[Record]:
    from moesim.harness.microbench.ops import measure_layer_ops, measure_op_overhead

    out = ctx.budget.attempt("op overhead", "op_overhead", 1.0,
                             lambda: measure_op_overhead(ctx, plan.ops_per_sample)) or []
    hidden, ffn, experts, top_k = plan.op_model
    for tokens in plan.op_sizes:
        for dtype in plan.dtypes:
            out += ctx.budget.attempt(
                f"ops {dtype} {tokens} tokens", f"ops/{dtype}", tokens,
                lambda: measure_layer_ops(ctx, dtype, tokens, hidden, ffn, experts, top_k)) or []
    log(f"op overhead, router, permute, unpermute, activation: {len(out)} points")
    return out


def _layer(ctx: Context, plan: Plan, log) -> list[Record]:
    from moesim.harness.microbench.layer import (LAYER_MODEL, measure_layer_ffn,
                                                 measure_layer_phases)

    hidden, ffn, experts, top_k = LAYER_MODEL
    out = []
    for tokens in plan.op_sizes:
        for dtype in plan.dtypes:
            out += ctx.budget.attempt(
                f"layer phases {dtype} {tokens} tokens", f"layer_phases/{dtype}", tokens,
                lambda: measure_layer_phases(ctx, dtype, tokens, hidden, ffn, experts,
                                             top_k)) or []
    log(f"reference layer router, permute, unpermute: {len(out)} points")
    ffn_recs = []
    for tokens in coverage_order(plan.ffn_tokens):
        for shape in plan.ffn_models:
            for dtype in plan.dtypes:
                h, f, _, k = shape
                ffn_recs += ctx.budget.attempt(
                    f"layer FFN {dtype} {'/'.join(map(str, shape))} {tokens} tokens",
                    f"layer_ffn/{dtype}", 6.0 * tokens * (k + 1) * h * f,
                    lambda: measure_layer_ffn(ctx, dtype, tokens, *shape)) or []
    log(f"reference layer expert FFNs: {len(ffn_recs)} points")
    return out + ffn_recs


def coverage_order(values) -> list:
    """``values`` (> 0) ordered so that each next one is the farthest in log scale from those
    before it (smallest first): when a time cap cuts the list short, the points measured still
    span the range (an efficiency table is read in log x and flat beyond its ends)."""
    import math

    left, out = sorted(values), []
    while left:
        pick = left[0] if not out else max(
            left, key=lambda v: (min(abs(math.log(v / u)) for u in out), -v))
        out.append(pick)
        left.remove(pick)
    return out


def _copy(ctx: Context, plan: Plan, log) -> list[Record]:
    from moesim.harness.microbench.ops import measure_copy

    out = [r for size in sorted(plan.copy_bytes)
           for r in [ctx.budget.attempt(f"copy {size / 2**20:.0f} MiB", "copy", size,
                                        lambda: measure_copy(ctx, size))] if r is not None]
    log("copy: " + ", ".join(f"{r.params['size_bytes'] / 2**20:.0f} MiB "
                             f"{r.params['bytes'] / r.stats.median_s / 1e9:.1f} GB/s" for r in out))
    return out


def _alltoall(ctx: Context, plan: Plan, log, workdir: Path) -> list[Record]:
    from moesim.harness.alltoall import launch_local

    if ctx.device.type == "cuda":
        import torch

        worlds = [w for w in plan.a2a_world_sizes if w <= torch.cuda.device_count()]
    else:
        worlds = list(plan.a2a_world_sizes)
    out = []
    for world in sorted(worlds):
        recs = ctx.budget.attempt(f"all-to-all {world} ranks", "alltoall", float(world),
                                  lambda: _launch_within(ctx, plan, world, workdir))
        out += recs or []
        log(f"all-to-all, {world} ranks: {len(recs or [])} cases")
    return out


def _launch_within(ctx: Context, plan: Plan, world: int, workdir: Path) -> list[Record]:
    """One all-to-all run under ``torchrun``, stopped when it outlasts the section's time left
    (``OverBudget``: skipped, not a failure); other launch failures propagate."""
    from moesim.harness.alltoall import HarnessError, launch_local

    left = max(ctx.budget.left_s(), 5.0)
    try:
        return launch_local(world, workdir / f"alltoall-{world}.json", sizes=plan.a2a_bytes,
                            uneven_sizes=plan.a2a_uneven_bytes, hidden=plan.a2a_hidden,
                            dtype=plan.a2a_dtype, quick=plan.bench.budget_s < 0.5,
                            timeout_s=left).records
    except HarnessError as exc:
        if "exceeded" not in str(exc):
            raise
        raise OverBudget(f"stopped after {left:.0f} s, the time left of {ctx.budget.cap_s:.0f} s",
                         2 * left) from None


def section_points(plan: Plan, name: str) -> int:
    """Points the section measures when nothing is skipped (rechecks not counted)."""
    d = len(plan.dtypes)
    return {"ops": 1 + d * len(plan.op_sizes),
            "layer": d * (len(plan.op_sizes) + len(plan.ffn_models) * len(plan.ffn_tokens)),
            "copy": len(plan.copy_bytes),
            "gemm": plan.gemm_passes * sum(len(plan.gemm_points(t)) for t in plan.dtypes),
            "grouped": d * len(plan.grouped), "alltoall": len(plan.a2a_world_sizes)}[name]


def announce(plan: Plan, sections, log) -> float:
    """Say before the run what it measures and for how long at most; returns that bound (s)."""
    caps = {name: plan.caps_s[name] for name in sections}
    total = sum(caps.values())
    log(f"plan: {sum(section_points(plan, n) for n in sections)} points; at most "
        f"{total:.0f} s ({total / 60:.1f} min) of measurement, per section "
        + ", ".join(f"{n} {c:.0f} s" for n, c in caps.items())
        + "; points that would overrun their section are skipped and listed in the profile")
    return total


def run_suite(device, plan: Plan, cache_bytes: float, sections=SECTIONS,
              log: Callable[[str], None] = _log, provenance: dict | None = None,
              clock: Callable[[], float] = time.perf_counter,
              progress: bool | None = None) -> Measurements:
    """Every section of ``plan`` on ``device``, each within its time cap (``plan.caps_s``);
    returns records plus provenance (section seconds, skipped points and why)."""
    from tqdm.auto import tqdm

    from moesim.harness.device import device_facts

    dtypes = tuple(d for d in plan.dtypes if dtype_works(d, device))
    if set(plan.dtypes) - set(dtypes):
        log(f"dtypes not supported on {device}, skipped: "
            + ", ".join(sorted(set(plan.dtypes) - set(dtypes))))
    plan = replace(plan, dtypes=dtypes)
    bound_s = announce(plan, sections, log)
    ctx = Context(device, plan.bench, cache_bytes)
    started = clock()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    records: list[Record] = []
    budgets: list[SectionBudget] = []
    bar = tqdm(total=sum(section_points(plan, n) for n in sections), unit="point",
               desc="calibrate", disable=(not progress) if progress is not None else None,
               file=sys.stderr, leave=False)
    with bar, tempfile.TemporaryDirectory(prefix="moesim-a2a-") as tmp:
        for name in sections:
            ctx.budget = SectionBudget(name, plan.caps_s[name], clock,
                                       on_point=lambda point, ok: bar.update(1))
            budgets.append(ctx.budget)
            bar.set_postfix_str(f"{name} (cap {plan.caps_s[name]:.0f} s)")
            section = {"ops": _ops, "layer": _layer, "copy": _copy, "gemm": _gemm,
                       "grouped": _grouped}.get(name)
            records += (section(ctx, plan, log) if section
                        else _alltoall(ctx, plan, log, Path(tmp)))
            _section_done(ctx.budget, log)
    prov = {**(provenance or {}), "device_facts": device_facts(device),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "suite_seconds": round(clock() - started, 1), "suite_bound_s": round(bound_s, 1),
            **_budget_provenance(budgets), "sections": list(sections), "dtypes": list(dtypes),
            "bench_config": asdict(plan.bench),
            "cache_bytes_rotated_past": cache_bytes, "load_average_1m_start": load_start}
    return Measurements(records, prov)


def _budget_provenance(budgets: list[SectionBudget]) -> dict:
    return {"section_seconds": {b.name: round(b.used_s(), 1) for b in budgets},
            "section_caps_s": {b.name: b.cap_s for b in budgets},
            "skipped_points": skipped_table(budgets)}


def _section_done(budget: SectionBudget, log) -> None:
    used = budget.finish()
    log(f"{budget.name} took {used:.1f} s of its {budget.cap_s:.0f} s cap"
        + (f"; skipped {len(budget.skipped)} point(s) that would overrun it, e.g. "
           f"{budget.skipped[0].point}: {budget.skipped[0].reason}" if budget.skipped else ""))
