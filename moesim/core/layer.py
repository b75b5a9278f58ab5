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

from moesim.core import comm, gemm, phases
from moesim.core.phases import (_col, dense_gemm, dense_load, ffn_gemms,  # noqa: F401 (re-exported)
                                 shared_cores)

PHASES = ("router", "permute", "dispatch", "experts", "shared_experts", "combine", "unpermute")
COMPUTE_PHASES = ("router", "permute", "experts", "shared_experts", "unpermute")


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
    split_k_min_k: int = 512
    dispatch_kernel: comm.KernelLaw | None = None  # the run's a2a_impl (None: the links above)
    combine_kernel: comm.KernelLaw | None = None


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
    expert_fixed_per_slot_s: np.ndarray | None = None  # ... per expert slot on the device ``[rows]``
    gemm_call_fixed_s: np.ndarray | None = None  # per expert GEMM call with tokens ``[rows]``
    router_call_fixed_s: np.ndarray | None = None  # ... of the router GEMM (activation dtype)

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


def _col_or_none(x):
    return None if x is None else _col(x) if np.ndim(x) else float(x)


def phase_costs(hw: DeviceParams, rows: LayerRows, slot_device: np.ndarray, num_devices: int,
                counts, hit: np.ndarray, volumes: dict[str, np.ndarray],
                kernel: str = "per-expert") -> dict:
    """Per-phase cost arrays ``[rows, devices]`` plus the work counters behind them; each phase
    is priced by its function in :mod:`moesim.core.phases`.

    ``counts``: tokens per slot ``[rows, slots]`` or their distribution (a ``SlotCounts``);
    ``hit``: P(slot has >= 1 token). ``kernel='all-to-all-v'`` (torch ``all_to_all_single``
    with uneven splits) adds, when rows cross devices, a count exchange to the dispatch (one
    latency + launch) and a receive-side regroup of the rows by local expert to permute and
    unpermute (a read + write pass each).
    """
    stream = phases.Streamer(hw, rows)
    router_s, logits, score_bytes = phases.router(hw, rows, stream)
    permute_s, unpermute_s, rows_bytes = phases.permute_unpermute(rows, stream)
    load = gemm.DeviceLoad.from_slots(counts, hit, slot_device, num_devices, hw.tile_m)
    experts_s, g1, g2, act_s, act_bytes = phases.routed_experts(hw, rows, load, stream)
    shared_s, s1, s2, shared_act = phases.shared_experts(hw, rows, stream)
    dispatch, combine = phases.exchanges(hw, rows, volumes)

    ones = np.ones((1, num_devices))
    permute_dev, unpermute_dev, dispatch_s = permute_s * ones, unpermute_s * ones, dispatch.time_s
    if kernel == "all-to-all-v" and num_devices > 1:
        count_exchange, regroup = phases.alltoallv_extras(hw, rows, dispatch, load.tokens, stream)
        dispatch_s = dispatch_s + count_exchange
        permute_dev, unpermute_dev = permute_dev + regroup, unpermute_dev + regroup
    shared_compute = s1.compute_s + s2.compute_s >= s1.memory_s + s2.memory_s + shared_act
    return {
        "phases": {"router": router_s * ones, "permute": permute_dev, "dispatch": dispatch_s,
                   "experts": experts_s, "shared_experts": shared_s * ones,
                   "combine": combine.time_s, "unpermute": unpermute_dev},
        "experts_bound": np.where(g1.compute_s + g2.compute_s >= g1.memory_s + g2.memory_s + act_s,
                                  "compute", "memory"),
        "shared_bound": np.broadcast_to(np.where(shared_compute, "compute", "memory"),
                                        (len(rows.tokens), num_devices)),
        "dispatch": dispatch, "combine": combine,
        "flops": (logits.flops + s1.flops + s2.flops) * ones + g1.flops + g2.flops,
        "hbm_bytes": (logits.bytes + s1.bytes + s2.bytes + score_bytes + rows_bytes * 3) * ones
        + g1.bytes + g2.bytes + act_bytes,
        "dev_tokens": load.tokens,
        "experts_hit": load.experts_hit,
    }


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
