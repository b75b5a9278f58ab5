"""The GEMM part of a calibrated profile: efficiency tables (from the reference layer's expert
FFNs where measured, else dense GEMMs), the per-call cost, the grouped-kernel check, the small
phases' kernels and streaming, and the router check (called by :func:`calibrate.calibrate`)."""
from __future__ import annotations

from dataclasses import replace

from moesim.calibration import call_fit, ffn_fit, gemm_fit, stream_fit
from moesim.calibration.fit import error_summary
from moesim.calibration.numbers import sig
from moesim.config import ConfigError, HardwareProfile


def gemm_device(base: HardwareProfile, units: int, mem_bps: float, launch_s: float,
                 tile_m: int | None = None):
    scale = units / base.compute.units
    peaks = {d: p * scale for d, p in base.compute.peak_flops_per_s.items()}
    return gemm_fit.GemmDevice(peaks, units, tile_m or base.compute.gemm_tile_m,
                               base.compute.gemm_tile_n, mem_bps, launch_s)


def _router_check(dev, tables, recs, mem_bps) -> dict:
    out = {}
    for dtype in sorted({r.params["dtype"] for r in recs}):
        mine = [r for r in recs if r.params["dtype"] == dtype]
        if dtype not in tables:
            continue
        pred = [gemm_fit.predict(dev, dtype, tables[dtype], r.params["tokens"], r.params["hidden"],
                                 r.params["experts"])[0]
                + r.params["bytes"] / mem_bps + 2 * dev.launch_s for r in mine]
        out[dtype] = error_summary(pred, [r.stats.median_s for r in mine])
    return out


def gemm_part(doc, quality, meas, base, units, mem_bps, launch_s, tile_m) -> None:
    """GEMM efficiency tables (from the layer's expert FFNs where measured, else from dense
    GEMMs), then the checks that use them and the small phases' kernels and streaming."""
    peak_bps = doc["memory"].get("bandwidth_bytes_per_s", base.memory.bandwidth_bytes_per_s)
    _streaming_part(doc, quality, meas, launch_s, mem_bps, peak_bps)
    recs = meas.of("gemm")
    ffn_recs = meas.of("layer_experts") + meas.of("layer_shared_experts")
    if not recs and not ffn_recs:
        return
    dev = gemm_device(base, units, mem_bps, launch_s, tile_m)
    if tile_m:
        doc["compute"]["gemm_tile_m"] = int(tile_m)
        doc["sources"]["compute.gemm_tile_m"] = (
            f"assumption (calibration choice): {tile_m}-token row tiles, so the efficiency "
            "table resolves every measured M (the model reads efficiency at tile-padded "
            "tokens per expert; CPU BLAS runs M tails with masked kernels, the table holds "
            "their cost)")
    missing = sorted({r.params["dtype"] for r in recs + ffn_recs} - set(dev.peaks))
    if missing:
        raise ConfigError(f"GEMM records in dtype(s) {', '.join(missing)} but the base profile "
                          f"'{base.name}' has no peak for them; expected one of "
                          f"{', '.join(sorted(dev.peaks))}", field="compute.peak_flops_per_s")
    grouped = _grouped_part(doc, quality, meas, dev, base)
    dev = _call_part(doc, quality, meas, dev, grouped)
    tables = _tables_part(doc, quality, dev, grouped, recs, ffn_recs, base, peak_bps, mem_bps)
    if meas.of("grouped_gemm"):
        quality["grouped_gemm"] = gemm_fit.check_grouped(dev, tables, meas.of("grouped_gemm"))
    router = [r for r in meas.records if r.kind == "router"]
    if router:
        quality["router"] = _router_check(dev, tables, router, mem_bps)


def _streaming_part(doc, quality, meas, launch_s, mem_bps, peak_bps) -> None:
    """Streaming errors, the small phases' fixed costs (bounded fits) and ``efficiency.phases``."""
    quality["streaming"] = stream_fit.stream_errors(meas.records, mem_bps, launch_s)
    copy_bps = quality.get("memory", {}).get("copy_bytes_per_s")
    fixed = stream_fit.fixed_costs(meas.records, launch_s, copy_bps)
    quality["layer_kernel_fixed_costs"] = fixed
    if stream_fit.bound_violations(fixed):
        quality.setdefault("bound_violations", []).extend(stream_fit.bound_violations(fixed))
    _phase_part(doc, fixed, peak_bps)


def _tables_part(doc, quality, dev, grouped, recs, ffn_recs, base, peak_bps, mem_bps) -> dict:
    """``efficiency.gemm``: the expert-FFN tables where layer records exist (dense-GEMM tables
    for the other dtypes), else the dense ones; returns dtype -> table."""
    dense = gemm_fit.fit_gemm(dev, recs) if recs else None
    if dense:
        quality["gemm"] = dense.quality
    if ffn_recs:
        stream = ffn_fit.streaming(doc["efficiency"].get("phases"), peak_bps,
                                   mem_bps / peak_bps, {r.params["dtype"] for r in ffn_recs},
                                   base.efficiency.phases.kernels["activation"])
        fit = ffn_fit.fit_ffn(dev, stream, grouped, ffn_recs)
        quality["gemm_layer_ffn"] = fit.quality
        if dense:
            quality["dense_gemm_table_on_layer_ffn"] = ffn_fit.check_dense(
                dev, stream, grouped, dense.tables, ffn_recs)
        tables = {**(dense.tables if dense else {}), **fit.tables}
        points = {d: q["points"] for d, q in fit.quality.items()}
        note = (f"ideal GEMM time (eff=1, model tiles) / (measured - launches - activation) per "
                f"expert FFN of the reference layer, timed in place (routed grouped GEMMs and "
                f"the shared expert; points per dtype {points}), median per tokens per expert; "
                f"dtypes without layer records keep the dense GEMM table")
    else:
        tables = dense.tables
        note = (f"ideal time (eff=1, model tiles) / (measured - launch) per dense GEMM, median "
                f"over {dense.quality[min(dense.quality)]['shapes']} expert shapes per M")
    tables = {d: [[sig(m), round(e, 4)] for m, e in t] for d, t in tables.items()}
    default = "bf16" if "bf16" in tables else min(tables)
    doc["efficiency"]["gemm"] = {
        "basis": "measured", "note": f"{note}; 'default' is the {default} table",
        "by_dtype": {**tables, "default": tables[default]}}
    return tables


def _call_part(doc, quality, meas, dev, grouped: bool):
    """``efficiency.gemm_call`` from the per-call probe (where measured); returns ``dev`` with
    it, so the expert-FFN table is fitted net of it."""
    fits = call_fit.fit_call_fixed(meas.of("grouped_gemm"), "grouped" if grouped else "loop",
                                   dev.launch_s)
    entry = call_fit.profile_entry(fits)
    if entry is None:
        return dev
    quality["gemm_call"] = fits
    doc["efficiency"]["gemm_call"] = entry
    return replace(dev, call_fixed_s=dict(entry["fixed_s"]))


def _grouped_part(doc, quality, meas, dev, base) -> bool:
    """Whether the device runs a grouped GEMM kernel (measured where grouped records exist)."""
    recs = meas.of("grouped_gemm")
    if not recs:
        return bool(base.compute.grouped_gemm)
    has_grouped = any(r.params["impl"] == "grouped" for r in recs)
    doc["compute"]["grouped_gemm"] = has_grouped
    doc["sources"]["compute.grouped_gemm"] = (
        "measured: torch._grouped_mm ran on this device" if has_grouped else
        "measured: no grouped kernel on this device; experts run one matmul each")
    return has_grouped


def _phase_part(doc, fixed: dict, peak_bytes_per_s: float) -> None:
    """``efficiency.phases`` from the per-phase fits ``t = fixed + bytes / rate``: kernels =
    fixed / launch overhead (at least 1), streaming efficiency = rate / peak bandwidth (the
    router's rate is dominated by its GEMM, which the model costs separately)."""
    kernels, mem_eff = {}, {}
    for key, fit in fixed.items():
        phase = key.split("/")[0]
        if fit.get("implied_launches") is not None:
            kernels[key] = max(1.0, float(fit["implied_launches"]))
        if phase != "router" and fit.get("bytes_per_s", 0) > 0:
            mem_eff[key] = round(min(1.0, fit["bytes_per_s"] / peak_bytes_per_s), 4)
    if kernels or mem_eff:
        doc["efficiency"]["phases"] = {
            "basis": "measured", "kernels": kernels, "memory_efficiency": mem_eff,
            "note": ("per phase/dtype fit of t = fixed + bytes / rate over token counts: kernels "
                     "= fixed / launch_overhead_s (eager torch runs several ops per phase), "
                     "memory_efficiency = rate / peak memory bandwidth with the model's byte "
                     "count (fp32 accumulation and unfused temporaries move more bytes)")}
