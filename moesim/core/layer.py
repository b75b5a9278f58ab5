"""One MoE layer's forward time per device, phase by phase; the layer ends with the slowest device.

Phases on each device (``tokens`` = T tokens entering the layer on that device):

- ``router``: GEMM [T, hidden] x [hidden, experts] + score/top-k kernel (reads the logits);
- ``permute``: gather the T * top_k (token, expert) rows into expert order;
- ``dispatch``: all-to-all of the rows to the devices owning their experts (``comm``);
- ``experts``: grouped GEMMs gate/up [M_e, hidden] x [hidden, (m-1) * ffn], activation,
  down [M_e, ffn] x [ffn, hidden] over the slots of the device (``gemm``);
- ``shared_experts``: the same FFN, dense, over all T tokens;
- ``combine``: the mirror all-to-all bringing expert outputs home;
- ``unpermute``: weighted sum of each token's top_k outputs.

Overlap modes combine them per device: ``none`` (sum), ``shared`` (shared experts under the
dispatch: ``max(dispatch, shared_experts)``) and ``two-batch`` (two micro-batches of T/2; in the
steady state of consecutive layers the compute stream and the communication stream each do two
micro-batches' work: ``2 * max(compute(T/2), comm(T/2))``, as in DeepSeek-V3's dual micro-batch
overlap and SGLang's two-batch overlap), scaled by the share of an exchange the device can hide
(``combine_phases``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.core import comm, gemm

PHASES = ("router", "permute", "dispatch", "experts", "shared_experts", "combine", "unpermute")
COMPUTE_PHASES = ("router", "permute", "experts", "shared_experts", "unpermute")
OVERLAP_MODES = ("none", "shared", "two-batch")


@dataclass(frozen=True)
class DeviceParams:
    """Hardware numbers for one profile (scalars, SI units)."""

    units: int
    tile_m: int
    tile_n: int
    launch_overhead_s: float
    grouped_gemm: bool
    mem_bytes_per_s: float
    mem_eff: float
    up_bytes_per_s: float
    up_eff: float
    up_latency_s: float
    out_bytes_per_s: float
    out_eff: float
    out_latency_s: float
    idle_peer_speedup: float = 1.0


@dataclass(frozen=True)
class LayerRows:
    """Per-row model/run numbers, arrays ``[rows]`` (SI units, bytes already per dtype)."""

    tokens: np.ndarray  # tokens per device entering the layer
    hidden: np.ndarray
    expert_ffn: np.ndarray
    shared_ffn: np.ndarray  # shared_experts * shared_expert_ffn (0 when none)
    matrices: np.ndarray  # 3 gated, 2 not
    top_k: np.ndarray
    experts: np.ndarray
    weight_bytes_per_param: np.ndarray  # incl. block scales
    act_bytes: np.ndarray  # per activation element
    dispatch_bytes_per_copy: np.ndarray
    combine_bytes_per_copy: np.ndarray
    peak_gemm_flops_per_s: np.ndarray  # expert/shared GEMMs (compute dtype)
    peak_router_flops_per_s: np.ndarray  # router GEMM (activation dtype)
    gemm_dtype: np.ndarray  # object array of dtype names
    act_dtype: np.ndarray
    gemm_curve: object  # the profile's efficiency.gemm (an ``Efficiency``)
    phase_kernels: dict  # phase -> kernels launched ``[rows]`` (router, permute, unpermute, activation)
    phase_mem_eff: dict  # phase -> memory-bandwidth efficiency of its streaming ``[rows]``
    grouped_curve: object = None  # the profile's efficiency.grouped_gemm (fused-kernel factor)
    expert_fixed_s: np.ndarray | None = None  # fused kernel's fixed time per call ``[rows]``

    def _eff(self, dtypes: np.ndarray, m_mean: np.ndarray, n=None, k=None,
             curve=None) -> np.ndarray:
        """Curve lookup per dtype; ``n``/``k`` (``[rows]``) reach shape-aware (grid) curves."""
        curve = self.gemm_curve if curve is None else curve
        first = dtypes[0]
        if (dtypes == first).all():
            return curve.at(m_mean, first, n=_col_or_none(n), k=_col_or_none(k))
        out = np.empty_like(m_mean)
        for dtype in set(dtypes):
            mask = dtypes == dtype
            pick = lambda v: None if v is None else _col(np.broadcast_to(v, mask.shape)[mask])  # noqa: E731
            out[mask] = curve.at(m_mean[mask], dtype, n=pick(n), k=pick(k))
        return out

    def expert_eff(self, m_mean: np.ndarray, n=None, k=None) -> np.ndarray:
        """Routed-expert GEMM efficiency: the GEMM's times the fused grouped kernel's factor
        at tokens per hit expert (``efficiency.grouped_gemm``; 1 when the profile has none)."""
        eff = self.gemm_eff(m_mean, n, k)
        if self.grouped_curve is None:
            return eff
        return np.minimum(eff * self._eff(self.gemm_dtype, m_mean, curve=self.grouped_curve), 1.0)

    def gemm_eff(self, m_mean: np.ndarray, n=None, k=None) -> np.ndarray:
        """GEMM efficiency at tokens per hit expert ``[rows, D]`` for each row's compute dtype
        (and GEMM width ``n`` / depth ``k`` per row for shape-aware profiles)."""
        return self._eff(self.gemm_dtype, m_mean, n, k)

    def router_eff(self, m_mean: np.ndarray, n=None, k=None) -> np.ndarray:
        return self._eff(self.act_dtype, m_mean, n, k)

    def subset(self, mask: np.ndarray, token_scale: float = 1.0) -> "LayerRows":
        """The rows where ``mask`` holds, with tokens scaled (two-batch uses 0.5)."""
        from dataclasses import fields, replace

        arrays = {f.name: getattr(self, f.name)[mask] for f in fields(self)
                  if isinstance(getattr(self, f.name), np.ndarray)}
        for name in ("phase_kernels", "phase_mem_eff"):
            arrays[name] = {k: v[mask] for k, v in getattr(self, name).items()}
        arrays["tokens"] = arrays["tokens"] * token_scale
        return replace(self, **arrays)


def _col(x) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1, 1)


def _col_or_none(x):
    return None if x is None else _col(x) if np.ndim(x) else float(x)


def _shaped(eff, n_dim, k_dim):
    """``eff(m)`` for one GEMM of width ``n_dim`` and depth ``k_dim`` from ``eff(m, n, k)``."""
    return lambda m: eff(m, n_dim, k_dim)


def dense_load(tokens, tile_m: int) -> gemm.DeviceLoad:
    """One 'slot' holding all ``tokens`` of each row (router, shared experts)."""
    counts = _col(tokens)
    return gemm.DeviceLoad(np.ceil(counts / tile_m - 1e-9), counts, (counts > 0).astype(float))


def ffn_gemms(load: gemm.DeviceLoad, hidden, ffn, matrices, weight_bytes_per_param, act_bytes,
              shape_eff=None, **kw) -> tuple[gemm.GemmCost, gemm.GemmCost]:
    """An expert FFN's two GEMMs over ``load``: gate/up ``[M, hidden] x [hidden, (m-1) ffn]``
    and down ``[M, ffn] x [ffn, hidden]`` (``kw``: ``gemm.grouped_gemm``'s device keywords;
    ``shape_eff(m, n, k)``, when given, is the efficiency of each GEMM at its own shape)."""
    up_n = (matrices - 1) * ffn
    up_kw = down_kw = kw
    if shape_eff is not None:
        up_kw = {**kw, "eff_gemm": _shaped(shape_eff, up_n, hidden)}
        down_kw = {**kw, "eff_gemm": _shaped(shape_eff, hidden, ffn)}
    up = gemm.grouped_gemm(load, hidden, up_n, hidden * up_n * weight_bytes_per_param,
                           (hidden + up_n) * act_bytes, **up_kw)
    down = gemm.grouped_gemm(load, ffn, hidden, hidden * ffn * weight_bytes_per_param,
                             (ffn + hidden) * act_bytes, **down_kw)
    return up, down


def _dense(hw: DeviceParams, tokens, k_dim, n_dim, weight_bytes, act_bytes, peak, eff) -> gemm.GemmCost:
    """A dense GEMM on every device (the router)."""
    load = dense_load(tokens, hw.tile_m)
    return gemm.grouped_gemm(load, k_dim, n_dim, weight_bytes,
                             act_bytes, peak_flops_per_s=peak, units=hw.units, tile_m=hw.tile_m,
                             tile_n=hw.tile_n, eff_gemm=eff, mem_bytes_per_s=hw.mem_bytes_per_s,
                             eff_mem=hw.mem_eff, launch_overhead_s=hw.launch_overhead_s)


def phase_costs(hw: DeviceParams, rows: LayerRows, slot_device: np.ndarray, num_devices: int,
                counts: np.ndarray, hit: np.ndarray, volumes: dict[str, np.ndarray],
                kernel: str = "per-expert") -> dict:
    """Per-phase cost arrays ``[rows, devices]`` plus the work counters behind them.

    ``kernel='all-to-all-v'`` (torch ``all_to_all_single`` with uneven splits) adds, when rows
    cross devices, a count exchange to the dispatch (one latency + launch) and a receive-side
    regroup of the rows by local expert to permute and unpermute (a read + write pass each).
    """
    h, f, m, a = rows.hidden, rows.expert_ffn, rows.matrices, rows.act_bytes
    t, k = rows.tokens, rows.top_k
    launch = hw.launch_overhead_s
    kernels, eff = rows.phase_kernels, rows.phase_mem_eff

    def stream(nbytes, phase: str, launches=None):
        """Streaming time of ``phase``: bytes at its bandwidth + its kernel launches."""
        return gemm.streaming_time(nbytes, hw.mem_bytes_per_s, _col(eff[phase]),
                                   _col(kernels[phase]) if launches is None else launches, launch)

    router = _dense(hw, t, h, rows.experts, h * rows.experts * a, (h + rows.experts) * a,
                    rows.peak_router_flops_per_s, _shaped(rows.router_eff, rows.experts, h))
    score_bytes = _col(t * rows.experts * 4.0 * 2 + t * k * 8.0)  # fp32 logits in/out, ids+weights
    # the router GEMM is one of the router's kernels; score + top-k are the others
    router_s = router.time_s + stream(score_bytes, "router", _col(kernels["router"] - 1.0))
    rows_bytes = _col(t * k * h * a)
    permute_s = stream(rows_bytes * 2, "permute")  # read + write every (token, expert) row
    unpermute_s = stream(rows_bytes + _col(t * h * a), "unpermute")

    kw = dict(units=hw.units, tile_m=hw.tile_m, tile_n=hw.tile_n, mem_bytes_per_s=hw.mem_bytes_per_s,
              eff_mem=hw.mem_eff, launch_overhead_s=launch, grouped=hw.grouped_gemm,
              peak_flops_per_s=rows.peak_gemm_flops_per_s, shape_eff=rows.gemm_eff)
    up_n = (m - 1) * f
    load = gemm.DeviceLoad.from_slots(counts, hit, slot_device, num_devices, hw.tile_m)
    g1, g2 = ffn_gemms(load, h, f, m, rows.weight_bytes_per_param, a,
                       **{**kw, "shape_eff": rows.expert_eff})
    dev_tokens = load.tokens
    act_kernels = _col(kernels["activation"])
    act_launch = act_kernels if hw.grouped_gemm else act_kernels * load.experts_hit
    act_s = stream(dev_tokens * _col((up_n + f) * a), "activation",
                   np.where(dev_tokens > 0, act_launch, 0.0))
    fixed = 0.0 if rows.expert_fixed_s is None else _col(rows.expert_fixed_s) * (dev_tokens > 0)
    experts_s = shared_cores(g1.time_s + g2.time_s + act_s + fixed, hw.idle_peer_speedup)

    sf = rows.shared_ffn
    has_shared = sf > 0
    s1, s2 = ffn_gemms(dense_load(t * has_shared, hw.tile_m), h, sf, m,
                       rows.weight_bytes_per_param, a, **kw)
    shared_act = stream(_col(t * has_shared * ((m - 1) * sf + sf) * a), "activation",
                        _col(has_shared * kernels["activation"]))
    shared_s = s1.time_s + s2.time_s + shared_act

    link = dict(up_bytes_per_s=hw.up_bytes_per_s, up_eff=hw.up_eff, up_latency_s=hw.up_latency_s,
                out_bytes_per_s=hw.out_bytes_per_s, out_eff=hw.out_eff,
                out_latency_s=hw.out_latency_s, launch_overhead_s=launch)
    dispatch = comm.alltoall(volumes, rows.dispatch_bytes_per_copy, **link)
    combine = comm.alltoall(volumes, rows.combine_bytes_per_copy, reverse=True, **link)

    ones = np.ones((1, num_devices))
    permute_dev, unpermute_dev = permute_s * ones, unpermute_s * ones
    dispatch_s = dispatch.time_s
    if kernel == "all-to-all-v" and num_devices > 1:
        moved = (dispatch.intra_bytes + dispatch.inter_bytes) > 0
        count_exchange = np.where(dispatch.inter_bytes > 0, hw.out_latency_s, hw.up_latency_s)
        dispatch_s = dispatch_s + np.where(moved, count_exchange + launch, 0.0)
        regroup = dev_tokens * _col(2.0 * h * a)  # read + write every received row
        permute_dev = permute_dev + stream(regroup, "permute")
        # the way back is the same kind of row gather, not the weighted reduction
        unpermute_dev = unpermute_dev + stream(regroup, "permute")
    phases = {
        "router": router_s * ones, "permute": permute_dev, "dispatch": dispatch_s,
        "experts": experts_s, "shared_experts": shared_s * ones, "combine": combine.time_s,
        "unpermute": unpermute_dev,
    }
    expert_compute = g1.compute_s + g2.compute_s
    expert_memory = g1.memory_s + g2.memory_s + act_s
    return {
        "phases": phases,
        "experts_bound": np.where(expert_compute >= expert_memory, "compute", "memory"),
        "shared_bound": np.broadcast_to(np.where(
            s1.compute_s + s2.compute_s >= s1.memory_s + s2.memory_s + shared_act,
            "compute", "memory"), (len(t), num_devices)),
        "dispatch": dispatch, "combine": combine,
        "flops": (router.flops + s1.flops + s2.flops) * ones + g1.flops + g2.flops,
        "hbm_bytes": (router.bytes + s1.bytes + s2.bytes + score_bytes + rows_bytes * 3) * ones
        + g1.bytes + g2.bytes + dev_tokens * _col((up_n + f) * a),
        "dev_tokens": dev_tokens,
        "experts_hit": load.experts_hit,
    }


def shared_cores(stage_s: np.ndarray, speedup: float) -> np.ndarray:
    """Per-device time of a stage between two collectives ``[rows, devices]`` when the ranks
    share C cores (``speedup`` = R / C measured: a per-rank profile prices each rank at its
    share with every rank busy). Preemptive scheduling of the ranks' work ``w_r`` on C cores
    ends at ``max(max_r w_r, sum_r w_r / C)`` (McNaughton's bound, which a work-conserving
    scheduler reaches): in shared-profile times ``t_r = w_r * R / C`` that is
    ``max(max_r t_r / speedup, mean_r t_r)``; a rank never takes longer than its own ``t_r``."""
    if speedup <= 1.0 or stage_s.shape[1] < 2:
        return stage_s
    floor = np.maximum(stage_s / speedup, stage_s.mean(axis=1, keepdims=True))
    return np.minimum(stage_s, floor)


def combine_phases(phases: dict[str, np.ndarray], overlap: np.ndarray,
                   half: dict[str, np.ndarray] | None = None,
                   hides: float = 1.0) -> np.ndarray:
    """Per-device layer time ``[rows, devices]`` under each row's overlap mode (0/1/2 codes).

    ``half``: phases at T/2 for the rows with ``overlap == 2`` only (in their order).
    ``hides``: the share h of ``min(exchange, compute)`` an overlap hides (the profile's
    ``compute.comm_overlap_fraction``): ``shared`` costs ``serial - h * min(dispatch,
    shared_experts)`` and ``two-batch`` ``2 * (compute + comm - h * min(compute, comm))`` at
    T/2, which is ``2 * max(compute, comm)`` for h = 1 (engines apart from the compute units
    move the bytes) and every phase in sequence, each exchange twice, for h = 0 (measured on
    this project's CPU, ``results/overlap-cpu/``).
    """
    serial = sum(phases[p] for p in PHASES)
    shared = serial - hides * np.minimum(phases["dispatch"], phases["shared_experts"])
    total = np.where(_col(overlap) == 1, shared, serial)
    if half is not None:
        compute = sum(half[p] for p in COMPUTE_PHASES)
        comm_s = half["dispatch"] + half["combine"]
        total[overlap == 2] = 2.0 * (compute + comm_s - hides * np.minimum(compute, comm_s))
    return total
