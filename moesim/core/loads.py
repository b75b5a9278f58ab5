"""Per-slot token counts and per-device traffic, in expectation or sampled.

Expectation (``expected_loads``): slot counts ``X ~ Binomial(T_total, q_e * share)`` (a
:class:`~moesim.core.counts.SlotCounts`, so row tiles and capacity are expectations over the
distribution, not functions of its mean); P(slot hit) ``1 - (1 - q_e * share)**T_total``. The
slowest device's load fluctuates above its mean; its expected maximum over D devices is
approximated by ``mu_d + z_D * sigma_d`` (Gaussian loads, ``z_D`` = expected max of D standard
normals), applied as a factor to the success probability of each of its slots and to its
received volumes. The drop rate under capacity is a property of every slot, so it is computed
from the uninflated distribution (``apply_capacity``). Sampled (``sampled_loads``): multinomial
counts per source device.
"""
from __future__ import annotations

import numpy as np

from moesim.core import capacity, traffic
from moesim.core.counts import SlotCounts
from moesim.core.gemm import per_device_sum
from moesim.core.placement import Placement
from moesim.core.routing import expected_max_std_normal


def slot_probs(q: np.ndarray, placement: Placement) -> np.ndarray:
    """P(a token sends one of its choices to slot i) ``[slots]``."""
    return q[placement.slot_expert] * placement.slot_share


def expected_loads(q: np.ndarray, placement: Placement, tokens_per_device: np.ndarray,
                   volumes: dict[str, np.ndarray]):
    """(counts, hit, volumes, imbalance) with the fluctuation factor applied; ``counts`` is a
    ``SlotCounts`` (the busiest device's slots), the others arrays per row."""
    p = slot_probs(q, placement)
    total = np.asarray(tokens_per_device, dtype=float)[:, None] * placement.num_devices
    counts = total * p
    log_miss = np.log1p(-np.minimum(p, 1.0 - 1e-15))
    hit = -np.expm1(total * log_miss)
    d = placement.num_devices
    mu = per_device_sum(counts, placement.slot_device, d)
    var = per_device_sum(counts * (1.0 - np.minimum(p, 1.0)), placement.slot_device, d)
    z = float(expected_max_std_normal(placement.num_devices))
    factor = 1.0 + z * np.sqrt(var) / np.maximum(mu, 1e-12)
    factor = np.where(mu > 0, factor, 1.0)
    inflated = np.minimum(p * factor[:, placement.slot_device], 1.0)
    scaled = dict(volumes)
    for key in ("recv_intra", "recv_inter"):
        scaled[key] = volumes[key] * factor
    mean_load = mu.mean(axis=1, keepdims=True)
    imbalance = (mu * factor).max(axis=1) / np.maximum(mean_load[:, 0], 1e-12)
    return SlotCounts(total, inflated), hit, scaled, imbalance


def sampled_loads(q: np.ndarray, placement: Placement, tokens_per_device: int, top_k: int,
                  samples: int, rng: np.random.Generator, kernel: str, domain_size: int,
                  copies: dict[str, np.ndarray]):
    """(counts, hit, volumes, imbalance) for ``samples`` random batches; rows = samples.

    Per source device, its ``T * top_k`` (token, expert) pairs fall on slots multinomially with
    probabilities ``q_e * share / top_k``. Per-expert traffic counts those pairs off the source;
    per-device/hierarchical traffic samples tokens hitting each device/node as binomials with
    the closed-form hit probabilities; padded traffic is fixed.
    """
    d = placement.num_devices
    p = slot_probs(q, placement) / top_k
    per_src = rng.multinomial(tokens_per_device * top_k, p / p.sum(), size=(samples, d))
    counts = per_src.sum(axis=1).astype(float)  # [samples, slots]
    hit = (counts > 0).astype(float)
    onehot = np.zeros((p.size, d))
    onehot[np.arange(p.size), placement.slot_device] = 1.0
    if kernel in ("per-expert", "all-to-all-v"):
        pair = per_src @ onehot  # [samples, src, dst]
    elif kernel in ("per-device", "hierarchical"):
        pair = rng.binomial(tokens_per_device, np.clip(copies["to_device"], 0, 1),
                            size=(samples, d, d)).astype(float)
    else:
        pair = np.broadcast_to(copies["to_device"] * tokens_per_device, (samples, d, d)).copy()
    vol = pair_volumes(pair, domain_size, kernel, copies, tokens_per_device)
    loads = counts @ onehot
    imbalance = loads.max(axis=1) / np.maximum(loads.mean(axis=1), 1e-12)
    return counts, hit, vol, imbalance


def pair_volumes(pair: np.ndarray, domain_size: int, kernel: str, copies: dict[str, np.ndarray],
                 tokens_per_device: int) -> dict[str, np.ndarray]:
    """Per-device send/receive copies per link class from a ``[samples, src, dst]`` matrix
    (the diagonal, a device's own tokens, is cleared). Hierarchical node-level copies keep
    their expectation."""
    samples, d, _ = pair.shape
    node = traffic.node_of_device(d, domain_size)
    idx = np.arange(d)
    pair[:, idx, idx] = 0.0
    same = (node[:, None] == node[None, :]).astype(float)
    vol = {"send_intra": (pair * same).sum(axis=2), "send_inter": (pair * (1 - same)).sum(axis=2),
           "recv_intra": (pair * same).sum(axis=1), "recv_inter": (pair * (1 - same)).sum(axis=1)}
    if kernel == "hierarchical":
        expected = traffic.device_volumes(copies, np.full(samples, float(tokens_per_device)),
                                          domain_size, kernel)
        for key in ("send_inter", "recv_inter"):
            vol[key] = expected[key]
    return vol


def trace_loads(ids: np.ndarray, placement: Placement, tokens_per_device: int, samples: int,
                rng: np.random.Generator, kernel: str, domain_size: int,
                copies: dict[str, np.ndarray]):
    """(counts, hit, volumes, imbalance) from a routing trace ``ids`` ``[num_tokens, top_k]``.

    Each sample is a window of ``tokens_per_device * D`` consecutive trace tokens starting at a
    random offset (wrapping around), so batches keep the trace's temporal correlation; token i of
    the window lives on device ``i // tokens_per_device``; a replicated expert's tokens go to its
    copies round-robin by token index. Per-expert traffic counts (token, expert) pairs off the
    source device, per-device traffic counts distinct destination devices per token.
    """
    d = placement.num_devices
    total = tokens_per_device * d
    top_k = ids.shape[1]
    copies_of = placement.replicas()
    first_slot = np.zeros(placement.num_experts, dtype=np.int64)
    order = np.argsort(placement.slot_expert, kind="stable")
    starts = np.concatenate([[0], np.cumsum(copies_of)[:-1]])
    first_slot[:] = starts
    slots_sorted = order  # slots of expert e: slots_sorted[starts[e] : starts[e] + copies_of[e]]
    counts = np.zeros((samples, placement.slot_expert.size))
    pair = np.zeros((samples, d, d))
    token = np.arange(total)
    src = token // tokens_per_device
    for s in range(samples):
        window = ids[(rng.integers(0, ids.shape[0]) + token) % ids.shape[0]]  # [total, top_k]
        replica = token[:, None] % copies_of[window]
        slot = slots_sorted[first_slot[window] + replica]
        counts[s] = np.bincount(slot.ravel(), minlength=counts.shape[1])
        dst = placement.slot_device[slot]  # [total, top_k]
        if kernel in ("per-expert", "all-to-all-v"):
            np.add.at(pair[s], (np.repeat(src, top_k), dst.ravel()), 1.0)
        elif kernel in ("per-device", "hierarchical"):
            hit = np.zeros((total, d), dtype=bool)
            hit[np.repeat(token, top_k), dst.ravel()] = True
            pair[s] = np.add.reduceat(hit.astype(float), np.arange(0, total, tokens_per_device))
        else:
            pair[s] = copies["to_device"] * tokens_per_device
    vol = pair_volumes(pair, domain_size, kernel, copies, tokens_per_device)
    hit_slots = (counts > 0).astype(float)
    loads = per_device_sum(counts, placement.slot_device, d)
    imbalance = loads.max(axis=1) / np.maximum(loads.mean(axis=1), 1e-12)
    return counts, hit_slots, vol, imbalance


def apply_capacity(q: np.ndarray, placement: Placement, tokens_per_device: np.ndarray,
                   counts, volumes: dict[str, np.ndarray], capacity_factor: float,
                   top_k: int, sampled: bool = False):
    """(processed counts, volumes scaled by the kept fraction, drop rate) under expert capacity.

    Sampled integer counts are clipped; expected ``SlotCounts`` get the cap (so row tiles and
    tokens are those of ``min(X, cap)``), and the drop rate is ``sum E[(X - cap)+] / sum E[X]``
    over the uninflated slot distributions (every slot drops, not only the busiest device's).
    Dropped assignments are neither sent nor computed; per-device volumes shrink by the row's
    kept fraction (the drop happens at the hot experts, so this spreads it evenly: an
    approximation for the senders, exact in total).
    """
    total = np.asarray(tokens_per_device, dtype=float) * placement.num_devices
    cap = capacity.slot_capacity(capacity_factor, total, top_k, placement.num_experts,
                                 placement.slot_share)
    if sampled:
        processed, rate = capacity.drop_sampled(counts, cap)
    else:
        rate = capacity.drop_rate_expected(total, slot_probs(q, placement), cap)
        processed = counts.capped(cap)
    kept = (1.0 - rate)[:, None]
    return processed, {k: v * kept for k, v in volumes.items()}, rate
