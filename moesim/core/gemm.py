"""Grouped expert GEMM cost: roofline with tile and wave quantisation.

For one GEMM ``[M_e, K] x [K, N]`` per expert e on a device with ``units`` SMs/CUs/cores and
tiles of ``tile_m x tile_n`` outputs:

    tiles      = sum_e ceil(M_e / tile_m) * ceil(N / tile_n)          (padding of skewed M_e)
    split      = clip(floor(units / tiles), 1, K // split_k_min_k)   (split-K when tiles < units)
    waves      = ceil(tiles * split / units)                          (wave quantisation)
    compute_s  = waves * 2 * tile_m * tile_n * (K / split) / (peak / units) / eff_gemm(M)
    memory_s   = (weights of experts with tokens + activations) / (bw * eff_mem)
    time_s     = max(compute_s, memory_s) + launches * launch_overhead_s
                 + experts hit * call_fixed_s

``call_fixed_s`` is what each expert's GEMM pays per call beyond the launch (the profile's
``efficiency.gemm_call``, per dtype: a CPU's bf16 matmul sets up ~15 us per call, and
``torch._grouped_mm`` on a CPU runs one matmul per expert; 0 where a profile has none).

Split-K (or stream-K) is how cuBLAS/CUTLASS keep all units busy when a thin GEMM has fewer
output tiles than units; each split still reads >= ``split_k_min_k`` of K (the profile's
``compute.split_k_min_k``, 512 on the shipped profiles: an assumption with its rationale there). ``eff_gemm(M)`` is the profile's ``efficiency.gemm`` curve at the tile-padded tokens per hit
expert (``tiles * tile_m / experts hit``), so it is constant within a tile.
Known counts pay ``ceil(M_e / tile_m)`` row tiles; a count distribution pays its expectation
``E[ceil(X / tile_m)]`` (binomial tail sums, :mod:`moesim.core.counts`), never the ceiling of the
mean count, which undercounts the padding (Mixtral top-2 at 1,024 tokens: 19.87 row tiles, not 16).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.core.counts import SlotCounts


@dataclass(frozen=True)
class GemmCost:
    """Arrays ``[rows, devices]``."""

    time_s: np.ndarray
    compute_s: np.ndarray
    memory_s: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray
    launches: np.ndarray


def row_tiles(counts: np.ndarray, hit: np.ndarray, tile_m: int) -> np.ndarray:
    """Expected row tiles per slot: ``hit * ceil(max(counts/hit, 1) / tile_m)``; 0 if never hit."""
    safe_hit = np.where(hit > 0, hit, 1.0)
    per_hit = np.maximum(counts / safe_hit, 1.0)
    return np.where(hit > 0, hit * np.ceil(per_hit / tile_m - 1e-9), 0.0)


def per_device_sum(values: np.ndarray, slot_device: np.ndarray, num_devices: int) -> np.ndarray:
    """Sum ``[rows, slots]`` over the slots of each device -> ``[rows, devices]``.

    Placements list slots device by device with equal counts, so this is a reshape-sum.
    """
    per = slot_device.size // num_devices
    if per * num_devices == slot_device.size and np.array_equal(
            slot_device, np.repeat(np.arange(num_devices), per)):
        return values.reshape(values.shape[0], num_devices, per).sum(axis=2)
    onehot = np.zeros((slot_device.size, num_devices))
    onehot[np.arange(slot_device.size), slot_device] = 1.0
    return values @ onehot


@dataclass(frozen=True)
class DeviceLoad:
    """Per-device aggregates of slot loads ``[rows, devices]``: row tiles, tokens, experts hit."""

    row_tiles: np.ndarray
    tokens: np.ndarray
    experts_hit: np.ndarray
    slots: np.ndarray | None = None  # expert slots held by each device ``[1, devices]``

    @classmethod
    def from_slots(cls, counts, hit: np.ndarray, slot_device: np.ndarray,
                   num_devices: int, tile_m: int) -> "DeviceLoad":
        """``counts``: ``[rows, slots]`` tokens per slot (known counts) or a ``SlotCounts``
        (a count distribution: row tiles are ``E[ceil(X / tile_m)]``); ``hit``: P(slot has
        >= 1 token)."""
        if isinstance(counts, SlotCounts):
            tiles, tokens = counts.row_tiles(tile_m), counts.mean
        else:
            tiles, tokens = row_tiles(counts, hit, tile_m), counts
        return cls(per_device_sum(tiles, slot_device, num_devices),
                   per_device_sum(tokens, slot_device, num_devices),
                   per_device_sum(hit, slot_device, num_devices),
                   per_device_sum(np.ones((1, slot_device.size)), slot_device, num_devices))


def grouped_gemm(load: DeviceLoad, k_dim, n_dim, weight_bytes_per_slot, act_bytes_per_token, *,
                 peak_flops_per_s, units: int, tile_m: int, tile_n: int, eff_gemm,
                 mem_bytes_per_s, eff_mem, launch_overhead_s: float,
                 grouped: bool = True, split_k_min_k: int = 512, call_fixed_s=0.0) -> GemmCost:
    """Cost of one grouped GEMM over every slot's tokens, per device ``[rows, devices]``.

    ``k_dim``, ``n_dim``, ``weight_bytes_per_slot``, ``act_bytes_per_token``,
    ``peak_flops_per_s``, ``mem_bytes_per_s``, ``eff_mem``: scalars or ``[rows]``.
    ``eff_gemm``: a function from tokens per hit expert ``[rows, devices]`` to efficiency;
    ``call_fixed_s``: seconds per expert call (scalar or ``[rows]``).
    """
    col = lambda x: np.asarray(x, dtype=float).reshape(-1, 1)  # noqa: E731
    k_dim, n_dim = col(k_dim), col(n_dim)
    tiles = load.row_tiles * np.ceil(n_dim / tile_n)
    max_split = np.maximum(np.floor(k_dim / float(split_k_min_k)), 1.0)
    split = np.clip(np.floor(units / np.maximum(tiles, 1e-12)), 1.0, max_split)
    waves = np.ceil(tiles * split / units - 1e-9)
    # efficiency is read at the padded rows per hit expert, so it is constant within a tile
    # and more tokens never make a GEMM faster
    m_padded = load.row_tiles * tile_m / np.maximum(load.experts_hit, 1e-12)
    per_unit = col(peak_flops_per_s) / units
    compute_s = waves * 2.0 * tile_m * tile_n * (k_dim / split) / per_unit / eff_gemm(m_padded)
    flops = 2.0 * load.tokens * k_dim * n_dim
    nbytes = load.experts_hit * col(weight_bytes_per_slot) + load.tokens * col(act_bytes_per_token)
    memory_s = nbytes / (col(mem_bytes_per_s) * col(eff_mem))
    launches = np.where(load.tokens > 0, 1.0, 0.0) if grouped else load.experts_hit
    time_s = np.maximum(compute_s, memory_s) + launches * launch_overhead_s
    if np.any(call_fixed_s):
        time_s = time_s + load.experts_hit * col(call_fixed_s)
    return GemmCost(time_s, compute_s, memory_s, flops, nbytes, launches)


def streaming_time(nbytes, mem_bytes_per_s, eff_mem, launches, launch_overhead_s) -> np.ndarray:
    """A memory-bound kernel (permute, activation, combine): bytes / (bw * eff) + launches."""
    return np.asarray(nbytes) / (mem_bytes_per_s * eff_mem) + launches * launch_overhead_s
