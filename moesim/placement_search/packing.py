"""The two greedy building blocks of EPLB-style placement: replicate, then pack.

``replicate`` hands redundant slots one by one to the expert whose per-copy load is highest
(replicas split their expert's tokens evenly), which minimises the largest per-copy load.
``pack`` is longest-processing-time greedy with a cardinality limit: items in decreasing load,
each to the least-loaded pack that still has room and does not hold the same expert.
Both follow the description of deepseek-ai/EPLB (``replicate_experts``, ``balanced_packing``);
the distinct-expert constraint is added because a device holds each expert at most once.
"""
from __future__ import annotations

import heapq

import numpy as np

from moesim.config.errors import ConfigError
from moesim.core.placement import replica_counts


def replicate(loads: np.ndarray, num_slots: int, max_copies: int) -> np.ndarray:
    """Copies per expert ``[num_experts]`` summing to ``num_slots``, at most ``max_copies`` each
    (the core's :func:`moesim.core.placement.replica_counts`)."""
    return replica_counts(loads, num_slots, max_copies)


def pack(item_loads: np.ndarray, item_labels: np.ndarray, num_packs: int,
         per_pack: int) -> np.ndarray:
    """Pack index of every item ``[num_items]``: LPT greedy, exactly ``per_pack`` items per pack,
    no two items with the same label in one pack."""
    item_loads = np.asarray(item_loads, dtype=float)
    order = sorted(range(item_loads.size), key=lambda i: (-item_loads[i], i))
    out = np.full(item_loads.size, -1, dtype=np.int64)
    held: list[set] = [set() for _ in range(num_packs)]
    heap = [(0.0, p) for p in range(num_packs)]
    for i in order:
        skipped = []
        while heap:
            load, p = heapq.heappop(heap)
            if item_labels[i] not in held[p]:
                break
            skipped.append((load, p))
        else:
            p, opened = _make_room(i, skipped, held, out, item_loads, item_labels, per_pack)
            skipped = [s for s in skipped if s[1] != opened[1]]
            if len(held[opened[1]]) < per_pack:
                skipped.append(opened)
            load = 0.0  # p is full again after this item; its load is no longer needed
        out[i] = p
        held[p].add(item_labels[i])
        if len(held[p]) < per_pack:
            heapq.heappush(heap, (load + item_loads[i], p))
        for item in skipped:
            heapq.heappush(heap, item)
    return out


def replicate_and_pack(loads: np.ndarray, experts: np.ndarray, devices: np.ndarray,
                       num_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Slots ``(slot_expert, slot_device)`` for ``experts`` (global ids) on ``devices``:
    ``num_slots`` copies (replicated by per-copy load), packed evenly."""
    experts, devices = np.asarray(experts), np.asarray(devices)
    copies = replicate(np.asarray(loads, dtype=float)[experts], num_slots, devices.size)
    slot_expert = np.repeat(experts, copies)
    per_copy = np.repeat(np.asarray(loads, dtype=float)[experts] / copies, copies)
    where = pack(per_copy, slot_expert, devices.size, num_slots // devices.size)
    return slot_expert, devices[where]


def _make_room(i: int, open_packs: list, held: list[set], out: np.ndarray,
               item_loads: np.ndarray, item_labels: np.ndarray, per_pack: int):
    """Every pack with room already holds item i's label: move an item j from a full pack p2
    (without that label) into an open pack p (j's label not in p), then put i into p2."""
    for load, p in sorted(open_packs):
        for j in np.flatnonzero(out >= 0):
            p2 = out[j]
            if (p2 != p and len(held[p2]) == per_pack and item_labels[i] not in held[p2]
                    and item_labels[j] not in held[p]):
                out[j] = p
                held[p2].discard(item_labels[j])
                held[p].add(item_labels[j])
                return int(p2), (load + item_loads[j], p)
    raise ConfigError("cannot place replicas without putting one expert twice on a device",
                      field="placement")
