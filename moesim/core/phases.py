"""One function per phase of a MoE layer: what each costs on every device ``[rows, devices]``.

Named quantities, SI units (see :mod:`moesim.core.layer` for the phases and how they combine):

- ``router``: GEMM ``[T, hidden] x [hidden, experts]`` plus the score and top-k kernels, which
  stream fp32 logits in and out and write ids + weights: ``T * experts * 4 * 2 + T * top_k * 8``
  bytes;
- ``permute``: read + write every (token, expert) row, ``2 * T * top_k * hidden * act`` bytes;
  ``unpermute``: read every row and write every token, ``(T * top_k + T) * hidden * act`` bytes;
- ``experts``: the FFN's two grouped GEMMs over the slots of the device plus the activation,
  which streams ``tokens * ((m - 1) * ffn + ffn) * act`` bytes;
- ``shared_experts``: the same FFN, dense, over all T tokens;
- ``dispatch``/``combine``: all-to-all of the copies (``moesim.core.comm``); the
  ``all-to-all-v`` kernel adds a count exchange to dispatch and a regroup pass
  (``2 * received rows * hidden * act`` bytes) to permute and unpermute.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from moesim.core import comm, gemm

if TYPE_CHECKING:
    from moesim.core.layer import DeviceParams, LayerRows


def _col(x) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1, 1)


def dense_load(tokens, tile_m: int) -> gemm.DeviceLoad:
    """One 'slot' holding all ``tokens`` of each row (router, shared experts)."""
    counts = _col(tokens)
    return gemm.DeviceLoad(np.ceil(counts / tile_m - 1e-9), counts, (counts > 0).astype(float))


def shaped(eff, n_dim, k_dim):
    """``eff(m)`` for one GEMM of width ``n_dim`` and depth ``k_dim`` from ``eff(m, n, k)``."""
    return lambda m: eff(m, n_dim, k_dim)


def ffn_gemms(load: gemm.DeviceLoad, hidden, ffn, matrices, weight_bytes_per_param, act_bytes,
              shape_eff=None, **kw) -> tuple[gemm.GemmCost, gemm.GemmCost]:
    """An expert FFN's two GEMMs over ``load``: gate/up ``[M, hidden] x [hidden, (m-1) ffn]``
    and down ``[M, ffn] x [ffn, hidden]`` (``kw``: ``gemm.grouped_gemm``'s device keywords;
    ``shape_eff(m, n, k)``, when given, is the efficiency of each GEMM at its own shape)."""
    up_n = (matrices - 1) * ffn
    up_kw = down_kw = kw
    if shape_eff is not None:
        up_kw = {**kw, "eff_gemm": shaped(shape_eff, up_n, hidden)}
        down_kw = {**kw, "eff_gemm": shaped(shape_eff, hidden, ffn)}
    up = gemm.grouped_gemm(load, hidden, up_n, hidden * up_n * weight_bytes_per_param,
                           (hidden + up_n) * act_bytes, **up_kw)
    down = gemm.grouped_gemm(load, ffn, hidden, hidden * ffn * weight_bytes_per_param,
                             (ffn + hidden) * act_bytes, **down_kw)
    return up, down


def dense_gemm(hw: "DeviceParams", tokens, k_dim, n_dim, weight_bytes, act_bytes, peak,
               eff, call_fixed_s=0.0) -> gemm.GemmCost:
    """A dense GEMM ``[tokens, k_dim] x [k_dim, n_dim]`` on every device (router, projections):
    one 'slot' holding all tokens, through ``gemm.grouped_gemm``; ``eff(m)`` its efficiency,
    ``call_fixed_s`` its per-call fixed cost (``efficiency.gemm_call``)."""
    return gemm.grouped_gemm(
        dense_load(tokens, hw.tile_m), k_dim, n_dim, weight_bytes, act_bytes,
        peak_flops_per_s=peak, units=hw.units, tile_m=hw.tile_m, tile_n=hw.tile_n, eff_gemm=eff,
        mem_bytes_per_s=hw.mem_bytes_per_s, eff_mem=hw.mem_eff,
        launch_overhead_s=hw.launch_overhead_s, split_k_min_k=hw.split_k_min_k,
        call_fixed_s=call_fixed_s)


@dataclass(frozen=True)
class Streamer:
    """Streaming time of a memory-bound phase: bytes at its bandwidth + its kernel launches
    (the profile's ``efficiency.phases`` kernels and memory efficiency per row)."""

    hw: "DeviceParams"
    rows: "LayerRows"

    def __call__(self, nbytes, phase: str, launches=None) -> np.ndarray:
        kernels = _col(self.rows.phase_kernels[phase]) if launches is None else launches
        return gemm.streaming_time(nbytes, self.hw.mem_bytes_per_s,
                                   _col(self.rows.phase_mem_eff[phase]), kernels,
                                   self.hw.launch_overhead_s)


def gemm_keywords(hw: "DeviceParams", rows: "LayerRows") -> dict:
    """``gemm.grouped_gemm``'s device keywords for the expert and shared-expert GEMMs."""
    return dict(units=hw.units, tile_m=hw.tile_m, tile_n=hw.tile_n,
                mem_bytes_per_s=hw.mem_bytes_per_s, eff_mem=hw.mem_eff,
                launch_overhead_s=hw.launch_overhead_s, grouped=hw.grouped_gemm,
                peak_flops_per_s=rows.peak_gemm_flops_per_s, shape_eff=rows.gemm_eff,
                split_k_min_k=hw.split_k_min_k,
                call_fixed_s=0.0 if rows.gemm_call_fixed_s is None else rows.gemm_call_fixed_s)


def router(hw: "DeviceParams", rows: "LayerRows", stream: Streamer):
    """(router seconds ``[rows, 1]``, the router GEMM's cost, score/top-k bytes ``[rows, 1]``)."""
    t, h, a, experts = rows.tokens, rows.hidden, rows.act_bytes, rows.experts
    logits = dense_gemm(hw, t, h, experts, h * experts * a, (h + experts) * a,
                        rows.peak_router_flops_per_s, shaped(rows.router_eff, experts, h),
                        0.0 if rows.router_call_fixed_s is None else rows.router_call_fixed_s)
    score_bytes = _col(t * experts * 4.0 * 2 + t * rows.top_k * 8.0)
    # the router GEMM is one of the router's kernels; score + top-k are the others
    score_s = stream(score_bytes, "router", _col(rows.phase_kernels["router"] - 1.0))
    return logits.time_s + score_s, logits, score_bytes


def permute_unpermute(rows: "LayerRows", stream: Streamer):
    """(permute s, unpermute s, bytes of all (token, expert) rows), each ``[rows, 1]``."""
    rows_bytes = _col(rows.tokens * rows.top_k * rows.hidden * rows.act_bytes)
    token_bytes = _col(rows.tokens * rows.hidden * rows.act_bytes)
    return (stream(rows_bytes * 2, "permute"), stream(rows_bytes + token_bytes, "unpermute"),
            rows_bytes)


def routed_experts(hw: "DeviceParams", rows: "LayerRows", load: gemm.DeviceLoad,
                   stream: Streamer):
    """(experts seconds ``[rows, D]``, up GEMM, down GEMM, activation seconds, activation bytes)."""
    f, m, a = rows.expert_ffn, rows.matrices, rows.act_bytes
    up, down = ffn_gemms(load, rows.hidden, f, m, rows.weight_bytes_per_param, a,
                         **{**gemm_keywords(hw, rows), "shape_eff": rows.expert_eff})
    act_kernels = _col(rows.phase_kernels["activation"])
    act_launch = act_kernels if hw.grouped_gemm else act_kernels * load.experts_hit
    act_bytes = load.tokens * _col(((m - 1) * f + f) * a)
    act_s = stream(act_bytes, "activation", np.where(load.tokens > 0, act_launch, 0.0))
    # a fused MoE kernel's fixed time per call and per expert slot it holds (calibrated
    # profiles; 0 otherwise)
    fixed = 0.0 if rows.expert_fixed_s is None else _col(rows.expert_fixed_s) * (load.tokens > 0)
    if rows.expert_fixed_per_slot_s is not None and load.slots is not None:
        fixed = fixed + _col(rows.expert_fixed_per_slot_s) * load.slots * (load.tokens > 0)
    experts_s = shared_cores(up.time_s + down.time_s + act_s + fixed, hw.idle_peer_speedup)
    return experts_s, up, down, act_s, act_bytes


def shared_experts(hw: "DeviceParams", rows: "LayerRows", stream: Streamer):
    """(shared-expert seconds ``[rows, 1]``, up GEMM, down GEMM, activation seconds)."""
    sf, m, a = rows.shared_ffn, rows.matrices, rows.act_bytes
    has_shared = sf > 0
    up, down = ffn_gemms(dense_load(rows.tokens * has_shared, hw.tile_m), rows.hidden, sf, m,
                         rows.weight_bytes_per_param, a, **gemm_keywords(hw, rows))
    act_s = stream(_col(rows.tokens * has_shared * ((m - 1) * sf + sf) * a), "activation",
                   _col(has_shared * rows.phase_kernels["activation"]))
    return up.time_s + down.time_s + act_s, up, down, act_s


def exchanges(hw: "DeviceParams", rows: "LayerRows", volumes: dict[str, np.ndarray]):
    """(dispatch, combine) all-to-all costs (``comm.alltoall``) over the profile's links, or,
    for a direction with a fitted kernel law (``hw.dispatch_kernel`` / ``hw.combine_kernel``,
    the run's ``a2a_impl``), over that law on its link class (:func:`kernel_link`)."""
    link = dict(up_bytes_per_s=hw.up_bytes_per_s, up_eff=hw.up_eff, up_latency_s=hw.up_latency_s,
                out_bytes_per_s=hw.out_bytes_per_s, out_eff=hw.out_eff,
                out_latency_s=hw.out_latency_s, launch_overhead_s=hw.launch_overhead_s)
    d_bytes, c_bytes = rows.dispatch_bytes_per_copy, rows.combine_bytes_per_copy
    return (comm.alltoall(volumes, d_bytes,
                          **kernel_link(link, hw.dispatch_kernel, d_bytes, rows.hidden)),
            comm.alltoall(volumes, c_bytes, reverse=True,
                          **kernel_link(link, hw.combine_kernel, c_bytes, rows.hidden)))


def kernel_link(link: dict, law: "comm.KernelLaw | None", bytes_per_copy, hidden) -> dict:
    """``comm.alltoall``'s link keywords with ``law`` (a fitted kernel family) on its class.

    On ``law.link`` (``up`` or ``out``): latency = ``law.latency_s``, bandwidth =
    ``law.bandwidth_bytes_per_s`` at efficiency (per row ``[rows, 1]``)

        eff = bytes_per_copy / (law.fit_bytes_per_element * hidden)   (1 when None)

    so the time is ``latency + copies * fit bytes per copy / bandwidth``: the law priced on the
    bytes its fit counted (DeepEP fits: ``2 * hidden`` per token copy, the bf16 payload;
    :mod:`moesim.calibration.aic.comm_fit`) while the reported bytes stay the exchange's own.
    No launch overhead is added (the measured kernel time includes it); the other link class
    keeps the profile's link. ``law=None``: ``link`` unchanged. Source: the fitted law of the
    profile's ``alltoall_kernels`` (its ``note``); DeepEP, github.com/deepseek-ai/DeepEP README.
    """
    if law is None:
        return link
    side = {"scale_up": "up", "scale_out": "out"}[law.link]
    eff = 1.0 if law.fit_bytes_per_element is None else _col(
        np.asarray(bytes_per_copy, float) / (law.fit_bytes_per_element * np.asarray(hidden, float)))
    return {**link, f"{side}_bytes_per_s": law.bandwidth_bytes_per_s, f"{side}_eff": eff,
            f"{side}_latency_s": law.latency_s, "launch_overhead_s": 0.0}


def alltoallv_extras(hw: "DeviceParams", rows: "LayerRows", dispatch, dev_tokens: np.ndarray,
                     stream: Streamer):
    """``all-to-all-v`` extras ``[rows, D]``: (count exchange added to dispatch, regroup pass
    added to permute and, the same row gather on the way back, to unpermute)."""
    moved = (dispatch.intra_bytes + dispatch.inter_bytes) > 0
    count_exchange = np.where(dispatch.inter_bytes > 0, hw.out_latency_s, hw.up_latency_s)
    dispatch_extra = np.where(moved, count_exchange + hw.launch_overhead_s, 0.0)
    regroup = stream(dev_tokens * _col(2.0 * rows.hidden * rows.act_bytes), "permute")
    return dispatch_extra, regroup


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
