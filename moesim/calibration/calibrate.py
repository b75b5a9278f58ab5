"""Measurements + a datasheet base profile -> a calibrated profile (a dict) and its fit quality.

Only measured fields are written; everything else (peaks, capacities, unmeasured links) is
inherited from ``base:``. Order matters: the launch overhead first (every other fit subtracts
it), then the memory bandwidth (the GEMM model's memory term), then GEMM efficiency, then the
checks that use all three (grouped GEMM, router), then the all-to-all links.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from moesim.calibration import comm_fit, gemm_fit, stream_fit
from moesim.calibration.gemm_part import gemm_part
from moesim.calibration.numbers import gb, sig
from moesim.harness import machine
from moesim.config import ConfigError, HardwareProfile
from moesim.harness.records import Measurements

MEMORY_SOURCES = ("stream", "copy")


@dataclass
class Options:
    name: str
    base_ref: str  # how the written profile names its base
    units: int | None = None  # compute units (CPU: torch threads); None: from the facts
    domain_size: int | None = None  # scale_up.domain_size; None: CPU -> largest world measured
    memory_source: str = "stream"
    tile_m: int | None = None  # compute.gemm_tile_m (None: 1 on CPUs, else the base's)
    a2a_world: int | None = None  # rank count whose all-to-all fit the profile takes
    every: int = 4
    command: str = ""
    extra_provenance: dict = field(default_factory=dict)


def _facts(meas: Measurements) -> dict:
    return dict(meas.provenance.get("device_facts") or {})


def _units(base: HardwareProfile, facts: dict, opts: Options) -> int:
    if opts.units:
        return int(opts.units)
    if facts.get("device_type") == "cpu" and facts.get("torch_threads"):
        return int(facts["torch_threads"])
    return int(facts.get("sm_count") or base.compute.units)


def _eff(value: float, peak: float) -> tuple[float, float | None]:
    """(efficiency <= 1, new peak or None): a measured rate above the peak raises the peak."""
    if value > peak:
        return 1.0, value
    return round(value / peak, 4), None


def _memory(meas, base, launch_s, gemm_recs, opts, quality) -> float | None:
    cache = base.memory.l2_bytes
    rates = {"copy": stream_fit.copy_rate(meas.of("copy"), launch_s, min_size=2 * cache),
             "stream": stream_fit.stream_rate(meas.records, launch_s)}
    if opts.memory_source not in MEMORY_SOURCES:
        raise ConfigError(f"unknown memory source '{opts.memory_source}'; expected one of "
                          f"{', '.join(MEMORY_SOURCES)}", field="--memory-source")
    floor = stream_fit.MIN_STREAM_OF_COPY * rates["copy"] if rates["copy"] else None
    if rates["stream"] is not None and floor and rates["stream"] < floor:
        quality.setdefault("bound_violations", []).append(
            f"memory: layer streaming rate {gb(rates['stream'])} GB/s below "
            f"{stream_fit.MIN_STREAM_OF_COPY:g} x the copy rate ({gb(rates['copy'])} GB/s) of "
            f"the same run; raised to {gb(floor)} GB/s")
    chosen = rates[opts.memory_source] or rates["copy"] or rates["stream"]
    if chosen is not None and floor:
        chosen = max(chosen, floor)
    weight_rate = gemm_fit.max_stream_rate(gemm_recs, launch_s)
    if chosen is None and weight_rate is None:
        return None
    final = max(v for v in (chosen, weight_rate) if v is not None)
    quality["memory"] = {
        "copy_bytes_per_s": rates["copy"], "stream_bytes_per_s": rates["stream"],
        "gemm_weight_bytes_per_s_max": weight_rate, "source": opts.memory_source,
        "chosen_bytes_per_s": final,
        "raised_to_gemm_weight_rate": bool(weight_rate and chosen and weight_rate > chosen)}
    return final


def calibrate(meas: Measurements, base: HardwareProfile, opts: Options) -> dict:
    """The calibrated profile as a dict (YAML-ready), fit quality included."""
    if not meas.records:
        raise ConfigError("no benchmark records to calibrate from", file=meas.source)
    facts = _facts(meas)
    units = _units(base, facts, opts)
    quality: dict = {"holdout_rule": f"every {opts.every}th shape (GEMM) / message size "
                                     "(all-to-all) left out of the fit, then predicted"}
    doc: dict = {"compute": {}, "memory": {}, "scale_up": {}, "scale_out": {}, "efficiency": {},
                 "sources": {}}
    launch_s = _compute_part(doc, quality, meas, base, facts, units)
    mem_bps = _memory_part(doc, quality, meas, base, launch_s, opts)
    tile_m = opts.tile_m or (1 if facts.get("device_type") == "cpu" else None)
    gemm_part(doc, quality, meas, base, units, mem_bps, launch_s, tile_m)
    _comm_part(doc, quality, meas, base, launch_s, facts, opts)
    quality["noise"] = _noise(meas)
    return _finish(doc, quality, meas, base, opts, facts)


def _compute_part(doc, quality, meas, base, facts, units) -> float:
    """Units (and peaks scaled to them) and the launch overhead; returns the latter."""
    notes = doc["sources"]
    if units != base.compute.units:
        scale = units / base.compute.units
        doc["compute"]["peak_flops_per_s"] = {d: p * scale for d, p in
                                              base.compute.peak_flops_per_s.items()}
        notes["compute.peak_flops_per_s"] = (f"base peaks x {units}/{base.compute.units} units "
                                             "(per-unit peak unchanged)")
    doc["compute"]["units"] = units
    notes["compute.units"] = (f"measured: torch used {units} thread(s) (torch.set_num_threads)"
                              if facts.get("device_type") == "cpu"
                              else f"measured: {units} SMs/CUs reported by the device")
    if not meas.of("op_overhead"):
        return base.compute.launch_overhead_s
    launch_s, per_op = stream_fit.launch_overhead(meas.of("op_overhead"))
    doc["compute"]["launch_overhead_s"] = sig(launch_s)
    notes["compute.launch_overhead_s"] = ("measured: median seconds per op over tiny torch "
                                          f"ops ({', '.join(sorted(per_op))})")
    quality["launch_overhead"] = {"per_op_s": {k: sig(v) for k, v in per_op.items()},
                                  "min_s": sig(min(per_op.values())),
                                  "max_s": sig(max(per_op.values()))}
    return launch_s


def _memory_part(doc, quality, meas, base, launch_s, opts) -> float:
    """The memory bandwidth efficiency (raising the peak if exceeded); returns bytes/s."""
    mem_bps = _memory(meas, base, launch_s, meas.of("gemm"), opts, quality)
    if mem_bps is None:
        return (base.memory.bandwidth_bytes_per_s
                * float(base.efficiency.memory_bandwidth.at(1.0)))
    eff, peak = _eff(mem_bps, base.memory.bandwidth_bytes_per_s)
    if peak:
        doc["memory"]["bandwidth_bytes_per_s"] = sig(peak)
        doc["sources"]["memory.bandwidth_bytes_per_s"] = (
            f"measured: {gb(mem_bps)} GB/s exceeds the base's peak "
            f"({gb(base.memory.bandwidth_bytes_per_s)} GB/s), so the peak is raised to it")
    m = quality["memory"]
    doc["efficiency"]["memory_bandwidth"] = {
        "basis": "measured", "value": eff,
        "note": (f"{gb(mem_bps)} GB/s effective: source '{m['source']}' (layer streaming "
                 f"kernels {gb(m['stream_bytes_per_s'])}, large copy read+write "
                 f"{gb(m['copy_bytes_per_s'])}), at least the max GEMM weight-streaming "
                 f"rate {gb(m['gemm_weight_bytes_per_s_max'])} GB/s")}
    return mem_bps


def _comm_part(doc, quality, meas, base, launch_s, facts, opts) -> None:
    recs = meas.of("alltoall")
    if not recs:
        return
    up = comm_fit.fit_link(recs, "intra", opts.every, opts.a2a_world)
    out = comm_fit.fit_link(recs, "inter", opts.every, opts.a2a_world)
    cpu = facts.get("device_type") == "cpu"
    links = (("scale_up", up, base.scale_up), ("scale_out", out, base.scale_out))
    for key, link, peak_link in links:
        src = link
        if link is None and key == "scale_out" and cpu and up is not None:
            src = up  # a CPU run puts every rank on this host: scale_out is the same path
        if src is None:
            continue
        if not np.isfinite(src.fit.rate):
            raise ConfigError(f"all-to-all times do not grow with size ({key}); cannot fit a "
                              "bandwidth", file=meas.source, field="records")
        eff, peak = _eff(src.fit.rate, peak_link.bandwidth_bytes_per_s)
        doc[key]["latency_s"] = sig(max(src.fit.alpha_s - launch_s, 0.0))
        if peak:
            doc[key]["bandwidth_bytes_per_s"] = sig(peak)
            doc["sources"][f"{key}.bandwidth_bytes_per_s"] = (
                f"measured: {gb(src.fit.rate)} GB/s exceeds the base's assumed peak "
                f"({gb(peak_link.bandwidth_bytes_per_s)} GB/s), so the peak is raised to it")
        copied = src is not link
        doc["efficiency"][f"{key}_bandwidth"] = {
            "basis": "measured", "value": eff,
            "note": (f"{gb(src.fit.rate)} GB/s per rank (max of sent, received) from "
                     f"{src.fit.points} even all-to-all sizes with {src.world_size} ranks (other "
                     "rank counts: fit_quality per_world_size)"
                     + ("; copied from scale_up: all ranks share this host" if copied else ""))}
        doc["sources"][f"{key}.latency_s"] = "measured: all-to-all alpha minus launch overhead"
        quality[key] = {**src.quality, "copied_from_scale_up": copied}
    worlds = sorted({r.params["world_size"] for r in recs if r.params["nodes"] == 1})
    domain = opts.domain_size or (max(worlds) if cpu and worlds else None)
    if domain:
        doc["scale_up"]["domain_size"] = int(domain)
        doc["sources"]["scale_up.domain_size"] = (f"ranks that shared one host in the all-to-all "
                                                  f"runs (measured: {worlds})")


def _noise(meas: Measurements) -> dict:
    rel = np.array([r.stats.rel_iqr for r in meas.records])
    return {"records": len(meas.records), "median_rel_iqr": round(float(np.median(rel)), 3),
            "records_rel_iqr_over_25pct": int(np.sum(rel > 0.25)),
            "records_measured_again": int(sum(r.stats.attempts > 1 for r in meas.records))}


def _finish(doc, quality, meas, base, opts, facts) -> dict:
    from moesim import __version__

    prov = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": opts.command, "moesim": __version__, "base": base.name,
            "base_digest": base.digest(), "measured": meas.provenance.get("date"),
            "measured_with": meas.provenance.get("command"), "measurements": meas.source,
            "device_facts": facts,
            **{k: v for k, v in meas.provenance.items()
               if k not in ("device_facts", "date", "command")},
            **opts.extra_provenance}
    threads = meas.provenance.get("torch_threads", facts.get("torch_threads"))
    prov["torch_threads"] = threads
    head = {"name": opts.name, "description": machine.describe(facts, threads, base.name),
            "kind": "calibrated", "base": opts.base_ref}
    body = {k: v for k, v in doc.items() if v}
    return {**head, **body, "provenance": _plain(prov), "fit_quality": _plain(quality)}


def _plain(obj):
    """JSON/YAML-safe: numpy scalars to Python, floats to 4 significant digits."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return sig(float(obj)) if np.isfinite(obj) else str(obj)
    if isinstance(obj, str):
        return str(obj)  # plain str (e.g. torch.__version__ is a str subclass)
    return obj
