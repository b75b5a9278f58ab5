"""Per-row numbers the core reads, from a profile and a frame's columns: the device's
parameters (:func:`device_params`) and each row's model, dtype and phase numbers
(:func:`layer_rows`), every per-row function evaluated once per distinct value
(:func:`map_distinct`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.config.dtypes import bytes_per_element, compute_dtype, weight_bytes_per_param
from moesim.core import layer, traffic


def device_params(hw, a2a_impl: str = "link") -> layer.DeviceParams:
    """Profile ``hw``'s numbers for the core; ``a2a_impl`` picks dispatch/combine's cost law
    (:func:`moesim.a2a_impl.kernel_laws`)."""
    from moesim.a2a_impl import kernel_laws

    dispatch_kernel, combine_kernel = kernel_laws(hw, a2a_impl)
    eff = hw.efficiency
    return layer.DeviceParams(
        units=hw.compute.units, tile_m=hw.compute.gemm_tile_m, tile_n=hw.compute.gemm_tile_n,
        launch_overhead_s=hw.compute.launch_overhead_s, grouped_gemm=hw.compute.grouped_gemm,
        mem_bytes_per_s=hw.memory.bandwidth_bytes_per_s, mem_eff=float(eff.memory_bandwidth.at(1.0)),
        up_bytes_per_s=hw.scale_up.bandwidth_bytes_per_s,
        up_eff=float(eff.scale_up_bandwidth.at(1.0)), up_latency_s=hw.scale_up.latency_s,
        out_bytes_per_s=hw.scale_out.bandwidth_bytes_per_s,
        out_eff=float(eff.scale_out_bandwidth.at(1.0)), out_latency_s=hw.scale_out.latency_s,
        idle_peer_speedup=hw.compute.idle_peer_speedup, split_k_min_k=hw.compute.split_k_min_k,
        dispatch_kernel=dispatch_kernel, combine_kernel=combine_kernel)


def map_distinct(fn, *columns: np.ndarray, kind=float) -> np.ndarray:
    """``fn`` applied per row, evaluated once per distinct combination of the columns."""
    columns = tuple(np.asarray(column) for column in columns)
    if len(columns[0]) and all((column == column[0]).all() for column in columns):
        value = np.asarray([fn(*(column[0] for column in columns))], dtype=kind)
        return np.repeat(value, len(columns[0]))  # one combination: the usual case in a group
    codes = np.zeros(len(columns[0]), dtype=np.int64)
    uniques = []
    for column in columns:
        c, u = pd.factorize(column, use_na_sentinel=False)
        codes = codes * len(u) + c
        uniques.append(u)
    combos, inverse = np.unique(codes, return_inverse=True)
    values = []
    for combo in combos:
        args = []
        for u in reversed(uniques):
            combo, i = divmod(int(combo), len(u))
            args.append(u[i])
        values.append(fn(*reversed(args)))
    return np.asarray(values, dtype=kind)[inverse]


def layer_rows(sub: dict, hw) -> layer.LayerRows:
    act_dtype = sub["activation_dtype"].astype(object)
    gemm_dtype = np.asarray(map_distinct(compute_dtype, sub["weight_dtype"], sub["compute_dtype"],
                                 act_dtype, kind=object), dtype=object)
    f = lambda c: np.asarray(sub[c], dtype=float)  # noqa: E731
    return layer.LayerRows(
        tokens=f("tokens"), hidden=f("hidden"), expert_ffn=f("expert_ffn"),
        shared_ffn=f("shared_experts") * f("shared_expert_ffn"),
        matrices=np.where(np.asarray(sub["gated"], dtype=bool), 3.0, 2.0), top_k=f("top_k"),
        experts=f("experts"),
        weight_bytes_per_param=map_distinct(weight_bytes_per_param, sub["weight_dtype"]),
        act_bytes=map_distinct(bytes_per_element, act_dtype),
        dispatch_bytes_per_copy=map_distinct(lambda h, d: float(traffic.token_bytes(h, d)),
                                     sub["hidden"], sub["dispatch_dtype"]),
        combine_bytes_per_copy=map_distinct(lambda h, d: float(traffic.token_bytes(h, d)),
                                    sub["hidden"], sub["combine_dtype"]),
        peak_gemm_flops_per_s=map_distinct(hw.peak_flops_per_s, gemm_dtype),
        peak_router_flops_per_s=map_distinct(hw.peak_flops_per_s, act_dtype),
        gemm_dtype=gemm_dtype, act_dtype=act_dtype, gemm_curve=hw.efficiency.gemm,
        grouped_curve=hw.efficiency.grouped_gemm,
        expert_fixed_s=None if hw.efficiency.grouped_gemm is None else map_distinct(
            hw.efficiency.grouped_gemm.fixed, gemm_dtype),
        expert_fixed_per_slot_s=None if hw.efficiency.grouped_gemm is None else map_distinct(
            hw.efficiency.grouped_gemm.fixed_per_expert, gemm_dtype),
        gemm_call_fixed_s=None if hw.efficiency.gemm_call is None else map_distinct(
            hw.efficiency.gemm_call.fixed, gemm_dtype),
        router_call_fixed_s=None if hw.efficiency.gemm_call is None else map_distinct(
            hw.efficiency.gemm_call.fixed, act_dtype),
        **phase_tables(hw, act_dtype))


def phase_tables(hw, act_dtype: np.ndarray) -> dict:
    """Per-row kernel counts and streaming efficiencies of the memory-bound phases."""
    from moesim.config.hardware import KERNEL_PHASES

    phases = hw.efficiency.phases
    base_eff = float(hw.efficiency.memory_bandwidth.at(1.0))
    kernels, eff = {}, {}
    for phase in KERNEL_PHASES:
        kernels[phase] = map_distinct(lambda d, p=phase: phases.lookup("kernels", p, d), act_dtype)
        eff[phase] = map_distinct(lambda d, p=phase: phases.lookup("memory_efficiency", p, d, base_eff),
                          act_dtype)
    return {"phase_kernels": kernels, "phase_mem_eff": eff}
