"""Per-rank hardware profiles for ranks that share one machine (profile authoring).

``moesim measure --shared-profiles BASE --ranks 2,4`` measures what one rank gets of this
machine while R ranks run the same loops (``moesim.measure.share.measure_share``); this module
turns those rates into the profile of one rank among R: :func:`shared_profile_doc` scales the
base profile (one rank alone) by the measured shares (:func:`share_factors`), takes the
between-phase all-to-all latency from the sync case (:func:`sync_latency`), the speed-up of a
rank whose peers wait when ranks outnumber cores (:func:`idle_peer_speedup`) and reports the
share of an exchange a GEMM hides (:func:`overlap_fraction`).
"""
from __future__ import annotations

import numpy as np

from moesim.config.errors import ConfigError
from moesim.harness.host import usable_cores


def share_factors(share: dict[int, list], ranks: int) -> dict[str, float]:
    """Per-rank rate with ``ranks`` ranks over the rate of one rank alone (median over ranks,
    then over rounds), capped at 1: a rank never gets more than the machine gives one rank."""
    out = {}
    for key in share[1][0]["rates"]:
        ratios = [np.median(shared["rates"][key]) / alone["rates"][key][0]
                  for alone, shared in zip(share[1], share[ranks])]
        out[key] = min(1.0, float(np.median(ratios)))
    return out


def _eff(rate: float, peak: float) -> tuple[float, float]:
    """(efficiency, peak): a measured rate above the base peak raises the peak (calibrate's rule)."""
    return (1.0, rate) if rate > peak else (round(rate / peak, 4), peak)


def shared_profile_doc(base, base_ref: str, name: str, share: dict[int, list],
                       ranks: int) -> dict:
    """The profile of one rank when ``ranks`` ranks (1 thread each) share this machine.

    From ``base`` (a calibrated profile of one rank alone, same threads): peak FLOP/s times the
    measured GEMM share, memory bandwidth times the copy share, launch overhead divided by the
    op-rate share; the all-to-all alpha/beta from ``base.fit_quality.scale_up.per_world_size``
    (the calibration's own all-to-all runs with this many ranks).
    """
    f = share_factors(share, ranks)
    speedup, speedup_note = idle_peer_speedup(share, ranks, usable_cores(), f)
    launch = base.compute.launch_overhead_s / f["ops_per_s"]
    fq = base.fit_quality or {}
    link = ((fq.get("scale_up") or {}).get("per_world_size") or {}).get(str(ranks))
    if link is None:
        raise ConfigError(f"profile '{base.name}' has no all-to-all fit for {ranks} ranks "
                          "(fit_quality.scale_up.per_world_size); calibrate with "
                          f"--a2a-ranks including {ranks}", field="base")
    eff, peak = _eff(float(link["bytes_per_s"]), base.scale_up.bandwidth_bytes_per_s)
    sync = sync_latency(share[ranks], float(link["bytes_per_s"]))
    hide = overlap_fraction(share[ranks])
    alpha = sync["latency_s"] if sync else float(link["alpha_s"])
    lat = max(alpha - launch, 0.0)
    shares = ", ".join(f"{k} {v:.3f}" for k, v in f.items())
    note = (f"{link['bytes_per_s'] / 1e9:.3g} GB/s per rank (the calibration's all-to-all fit for "
            f"{ranks} ranks x 1 thread on this host)")
    return {
        "name": name, "kind": "calibrated", "base": base_ref,
        "description": f"{base.name} per rank when {ranks} ranks x "
                       f"{share[ranks][0]['threads_per_rank']} torch thread(s) share this machine "
                       f"({usable_cores()} cores); measured shares: {shares}",
        "compute": {"peak_flops_per_s": {d: _sig(p * f["gemm_flops_per_s"]) for d, p in
                                         base.compute.peak_flops_per_s.items()},
                    "launch_overhead_s": _sig(launch),
                    **({"idle_peer_speedup": _sig(speedup)} if speedup > 1 else {})},
        "memory": {"bandwidth_bytes_per_s": _sig(base.memory.bandwidth_bytes_per_s
                                                 * f["copy_bytes_per_s"])},
        "scale_up": {"latency_s": _sig(lat), "bandwidth_bytes_per_s": _sig(peak)},
        "scale_out": {"latency_s": _sig(lat), "bandwidth_bytes_per_s": _sig(peak)},
        "efficiency": {k: {"basis": "measured", "value": eff, "note": note}
                       for k in ("scale_up_bandwidth", "scale_out_bandwidth")},
        "sources": {**_share_sources(share, ranks, f, sync, float(link["alpha_s"])),
                    **({"compute.idle_peer_speedup": speedup_note} if speedup > 1 else {})},
        "provenance": {"share_measurement": {str(r): share[r] for r in (1, ranks)},
                       "date": share[ranks][0].get("date"),
                       "base": base.name, "base_digest": base.digest()},
        "fit_quality": {**{k: v for k, v in fq.items() if k not in ("scale_up", "scale_out")},
                        "scale_up": {"in_sample": link.get("in_sample"), **{
                            k: v for k, v in link.items() if k != "in_sample"}},
                        "sharing": {k: _sig(v) for k, v in f.items()},
                        **({"sync": sync} if sync else {}),
                        **({"sync_overlap": {**hide, "note": SYNC_OVERLAP_NOTE}} if hide else {})},
    }


def idle_peer_speedup(share: dict[int, list], ranks: int, cores: int,
                      f: dict[str, float]) -> tuple[float, str]:
    """(speedup, source): how much faster one of ``ranks`` ranks computes while its peers wait
    in a collective, when ranks outnumber ``cores``: the GEMM share with one rank per core over
    the share with all ranks busy (measured where the share runs had ``cores`` ranks, else the
    ideal ``ranks / cores``). 1 when every rank has its own core."""
    if ranks <= cores:
        return 1.0, ""
    if cores in share and share[cores]:
        alone = share_factors(share, cores)["gemm_flops_per_s"]
        value = alone / f["gemm_flops_per_s"]
        return value, (f"measured: GEMM share with {cores} ranks on {cores} cores ({alone:.3f}) / "
                       f"with {ranks} ranks ({f['gemm_flops_per_s']:.3f}); costs the expert stage "
                       "of skewed layers as max(heaviest rank alone, all ranks' work / cores)")
    return ranks / cores, (f"assumption: {ranks} ranks / {cores} cores (no share run with "
                           f"{cores} ranks)")


SYNC_OVERLAP_NOTE = (
    "share of min(exchange, GEMM) hidden with a 16 KiB all-to-all in flight during one GEMM; "
    "reported, not used: it scatters between rounds and does not carry over to the layer's "
    "overlap modes (results/overlap-cpu/: two-batch lost time on every config), so "
    "compute.comm_overlap_fraction keeps the base's value")


def overlap_fraction(rounds: list[dict]) -> dict | None:
    """Share of ``min(exchange, GEMM)`` hidden when the sync case's all-to-all is in flight
    during its GEMM: per rank, with per-iteration times ``g`` (GEMM), ``s`` (GEMM then
    exchange) and ``o`` (overlapped), ``(s - o) / min(g, s - g)`` clipped to [0, 1]; median over
    ranks, then rounds. None without overlap samples."""
    per_round = []
    for rec in rounds:
        samples = [x for x in rec.get("sync") or [] if "overlap_s" in x]
        if not samples:
            continue
        values = []
        for x in samples:
            g, s_, o = (x[k] / x["iters"] for k in ("compute_s", "compute_a2a_s", "overlap_s"))
            hideable = min(g, s_ - g)
            values.append(float(np.clip((s_ - o) / hideable, 0.0, 1.0)) if hideable > 0 else 0.0)
        per_round.append(float(np.median(values)))
    if not per_round:
        return None
    return {"fraction": _sig(float(np.median(per_round))), "per_round": [_sig(v) for v in per_round]}


def sync_latency(rounds: list[dict], bytes_per_s: float) -> dict | None:
    """The latency of one all-to-all between compute phases, from the share runs' sync case
    (``moesim.measure.share.sync_seconds``): per rank ``(wall(GEMM; a2a) - wall(GEMM)) / iters``
    less the wire time of its bytes, median over ranks, then over rounds. None without it."""
    per_round = []
    for rec in rounds:
        samples = rec.get("sync")
        if not samples:
            continue
        ranks = len(samples)
        wire = (ranks - 1) * samples[0]["bytes_per_peer"] / bytes_per_s
        per_round.append(float(np.median([(s["compute_a2a_s"] - s["compute_s"]) / s["iters"]
                                          for s in samples])) - wire)
    if not per_round:
        return None
    return {"latency_s": _sig(max(float(np.median(per_round)), 0.0)),
            "per_round_s": [_sig(v) for v in per_round],
            "wire_s": _sig(wire)}


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _share_sources(share: dict[int, list], ranks: int, f: dict[str, float],
                   sync: dict | None = None, alpha_s: float | None = None) -> dict[str, str]:
    def rates(key):
        alone = ", ".join(f"{r['rates'][key][0]:.4g}" for r in share[1])
        each = "; ".join(", ".join(f"{v:.4g}" for v in r["rates"][key]) for r in share[ranks])
        return f"one rank alone [{alone}]/s; each of {ranks} ranks [{each}]/s, per round"
    loads = [r["load_1m"] for r in share[ranks]]
    loop = (f"measured: each rank loops the case {share[ranks][0]['duration_s']} s after a barrier, "
            f"{len(share[ranks])} rounds (moesim.measure.share); load "
            f"{min(loads)}-{max(loads)}")
    return {
        "compute.peak_flops_per_s": f"base peak x {f['gemm_flops_per_s']:.3f}, the measured share "
                                    f"of fp32 512^3 GEMM throughput ({rates('gemm_flops_per_s')}); {loop}",
        "compute.launch_overhead_s": f"base / {f['ops_per_s']:.3f}, the measured share of tiny-op "
                                     f"throughput ({rates('ops_per_s')}); {loop}",
        "memory.bandwidth_bytes_per_s": f"base x {f['copy_bytes_per_s']:.3f}, the measured share of "
                                        f"32 MiB copy throughput ({rates('copy_bytes_per_s')}); {loop}",
        "scale_up.latency_s": (
            f"measured: {sync['latency_s'] * 1e6:.0f} us per all-to-all between compute phases "
            f"(sync case: {SYNC_DOC}; rounds {sync['per_round_s']} s), minus the shared launch "
            f"overhead; back-to-back all-to-alls (the calibration's fit) take "
            f"{alpha_s * 1e6:.0f} us, but a layer never runs them back to back"
            if sync else "measured: alpha of the calibration's all-to-all fit for this rank "
                         "count minus the shared launch overhead"),
    }


SYNC_DOC = ("each rank runs 100 x (256^3 fp32 GEMM; all-to-all of 16 KiB per peer) and 100 x "
            "GEMM alone, after a barrier; latency = the difference per iteration less wire time")
