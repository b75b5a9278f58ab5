"""Human units at the edge: readable tables of a prediction."""
from __future__ import annotations


def human_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


def human_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def format_result(r) -> str:
    """Breakdown table, bottleneck and key counters of a PredictResult."""
    c = r.config
    lines = [f"{r.model} on {r.hardware}: tokens/device={c.get('tokens')} ep={c.get('ep')} "
             f"experts={c.get('experts')} top_k={c.get('top_k')} placement={c.get('placement')} "
             f"routing={c.get('routing')} overlap={c.get('overlap')}"
             + (f" a2a_impl={c['a2a_impl']}" if c.get("a2a_impl", "link") != "link" else ""),
             f"{'phase':<16}{'time':>12}{'share':>8}"]
    total = sum(r.breakdown_s.values()) or 1.0
    for phase, t in r.breakdown_s.items():
        lines.append(f"{phase:<16}{human_time(t):>12}{100 * t / total:>7.1f}%")
    if r.overlap_hidden_s > 0:
        lines.append(f"{'hidden by overlap':<16}{'-' + human_time(r.overlap_hidden_s):>12}")
    lines.append(f"{'layer time':<16}{human_time(r.time_s):>12}")
    if "time_p99_s" in r.extra:
        lines.append(f"{'p99 (MC)':<16}{human_time(r.extra['time_p99_s']):>12}"
                     f"   ({r.extra['samples']} samples)")
    lines += [
        f"bottleneck: {r.bottleneck}",
        f"throughput: {r.tokens_per_s:,.0f} tokens/s (EP group, this layer)",
        f"per device: {r.flops / 1e9:.2f} GFLOP, HBM {human_bytes(r.hbm_bytes)}, "
        f"NVLink {human_bytes(r.comm_bytes['intra_node'])}, network "
        f"{human_bytes(r.comm_bytes['inter_node'])}",
        f"MoE-layer memory/device: {human_bytes(r.moe_memory_bytes_per_device)} of "
        f"{human_bytes(r.memory_capacity_bytes)} ({'fits' if r.moe_fits_in_memory else 'DOES NOT FIT'}; "
        "MoE layers' weights and this layer's buffers only: attention, dense layers and KV "
        "cache not counted)",
        f"load imbalance (max/mean): {r.load_imbalance:.2f}",
    ]
    return "\n".join(lines)
