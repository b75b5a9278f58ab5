"""Fast per-device cost proxies for local search, and the hardware-derived one validated
against ``moesim.predict`` (tests/test_placement_search.py).

A proxy is additive per slot: each slot contributes a few statistics (``slot_stats``), a device
sums its slots' statistics, and ``device_cost`` maps the sums to a cost. Swapping two slots
between devices then updates two sums, so a local-search move is evaluated in O(1).

``LoadCost``: the device's share of the load (what EPLB balances).

``TimeCost``: seconds on the device, the structure of ``moesim.core.layer`` reduced to three
terms. With ``T`` tokens in the batch (all EP ranks together), slot ``s`` of expert ``e`` with
per-token probability ``p_s = q_e * share_s`` gets ``T p_s`` tokens (variance ``T p_s (1-p_s)``)
and has at least one token with probability ``1 - (1 - p_s)**T``. Per device::

    L    = sum_s T p_s + z_D * sqrt(sum_s T p_s (1 - p_s))   expected max load (as core.loads)
    H    = sum_s 1 - (1 - p_s)**T                             experts with tokens
    cost = max(L * flop_s, H * weight_s) + L * comm_s

``flop_s``: expert FLOPs of one (token, expert) pair at peak x GEMM efficiency; ``weight_s``:
reading one expert's weights at HBM bandwidth x efficiency; ``comm_s``: dispatch + combine
bytes of one pair over the slower of the scale-up and scale-out shares (per-expert kernel:
a device receives ``(domain-1)/D`` of its pairs over NVLink and ``(D-domain)/D`` over the NIC).
It ignores tile/wave quantisation, launch overheads and node-level deduplication of the
per-device/hierarchical kernels, which ``moesim.predict`` models; the final choice between
candidate placements is always made with ``moesim.predict``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.config.dtypes import weight_bytes
from moesim.core.routing import cap_inclusion, expected_max_std_normal
from moesim.core.traffic import token_bytes


class LoadCost:
    """Cost = the device's summed per-slot load (unitless)."""

    def slot_stats(self, slot_mass: np.ndarray) -> np.ndarray:
        return np.asarray(slot_mass, dtype=float)[..., None]

    def device_cost(self, stats: np.ndarray) -> np.ndarray:
        return stats[..., 0]


@dataclass(frozen=True)
class TimeCost:
    """Seconds on one device (see module docstring). ``slot_mass`` is per-slot load in any
    unit; it is rescaled to per-token probabilities that sum to ``top_k``."""

    total_tokens: float
    top_k: int
    num_devices: int
    flop_s: float
    weight_s: float
    comm_s: float
    mass_scale: float = 1.0  # set by ``for_loads``: slot_mass * mass_scale = p_s

    def for_loads(self, loads: np.ndarray) -> TimeCost:
        """This proxy with the mass scale that maps ``loads`` to inclusion probabilities."""
        total = float(np.sum(loads))
        scale = self.top_k / total if total > 0 else 1.0
        return TimeCost(self.total_tokens, self.top_k, self.num_devices, self.flop_s,
                        self.weight_s, self.comm_s, scale)

    def slot_stats(self, slot_mass: np.ndarray) -> np.ndarray:
        p = np.minimum(np.asarray(slot_mass, dtype=float) * self.mass_scale, 1.0)
        counts = self.total_tokens * p
        var = counts * (1.0 - p)
        hit = -np.expm1(self.total_tokens * np.log1p(-np.minimum(p, 1.0 - 1e-15)))
        return np.stack([counts, var, hit], axis=-1)

    def device_cost(self, stats: np.ndarray) -> np.ndarray:
        z = float(expected_max_std_normal(self.num_devices))
        load = stats[..., 0] + z * np.sqrt(np.maximum(stats[..., 1], 0.0))
        return np.maximum(load * self.flop_s, stats[..., 2] * self.weight_s) + load * self.comm_s


def time_cost(model, hw, tokens_per_device: int, num_devices: int) -> TimeCost:
    """The hardware proxy for ``model`` (a MoEModel) on ``hw`` (a HardwareProfile)."""
    params = model.expert_params()
    eff = hw.efficiency
    per_expert = tokens_per_device * num_devices * model.top_k / model.experts
    gemm_eff = float(eff.gemm.at(max(per_expert, 1.0), model.gemm_dtype))
    flop_s = 2.0 * params / (hw.peak_flops_per_s(model.gemm_dtype) * gemm_eff)
    weight_s = weight_bytes(model.weight_dtype, params) / (
        hw.memory.bandwidth_bytes_per_s * float(eff.memory_bandwidth.at(1.0)))
    pair_bytes = float(token_bytes(model.hidden, model.dispatch_dtype)
                       + token_bytes(model.hidden, model.combine_dtype))
    domain = min(hw.scale_up.domain_size, num_devices)
    up = (domain - 1) / num_devices * pair_bytes / (
        hw.scale_up.bandwidth_bytes_per_s * float(eff.scale_up_bandwidth.at(1.0)))
    out = (num_devices - domain) / num_devices * pair_bytes / (
        hw.scale_out.bandwidth_bytes_per_s * float(eff.scale_out_bandwidth.at(1.0)))
    return TimeCost(float(tokens_per_device * num_devices), model.top_k, num_devices, flop_s,
                    weight_s, max(up, out))


def device_costs(placement, loads: np.ndarray, proxy=None) -> np.ndarray:
    """Proxy cost of every device ``[num_devices]`` for ``placement`` under ``loads``."""
    proxy = bind_proxy(proxy, loads)
    mass = np.asarray(loads, dtype=float)[placement.slot_expert] * placement.slot_share
    stats = proxy.slot_stats(mass)
    sums = np.zeros((placement.num_devices, stats.shape[-1]))
    np.add.at(sums, placement.slot_device, stats)
    return proxy.device_cost(sums)


def bind_proxy(proxy, loads):
    """``proxy`` ready for ``loads`` (``LoadCost`` when None)."""
    if proxy is None:
        return LoadCost()
    return proxy.for_loads(loads) if hasattr(proxy, "for_loads") else proxy


def inclusion_from_loads(loads: np.ndarray, top_k: int) -> np.ndarray:
    """Per-token inclusion probabilities ``q`` (``sum == top_k``, ``q <= 1``) from loads."""
    loads = np.asarray(loads, dtype=float)
    if loads.sum() <= 0:
        return np.full(loads.size, top_k / loads.size)
    return cap_inclusion(loads, top_k)
