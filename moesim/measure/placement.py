"""Expert placement in the measured layers: ``moesim.core.placement.Placement`` as torch lookups.

The placement is the cost model's (``Placement``: slot ``i`` holds expert ``slot_expert[i]`` on
device ``slot_device[i]``; ``placement[rank]`` lists are accepted and converted with
``core.placement.from_device_lists``). :class:`ReplicaTable` only indexes it for the forward
pass: the (token, expert) pairs of an expert with several replicas are split among them
round-robin by token index (replica ``token % num_replicas`` in rank order), which gives each
replica the share ``slot_share`` the cost model assumes.
"""
from __future__ import annotations

import numpy as np
import torch

from moesim.core.placement import Placement, from_device_lists


def as_placement(placement: Placement | list[list[int]], num_experts: int) -> Placement:
    """``placement`` itself, or the Placement of expert ids per rank (validated)."""
    if isinstance(placement, Placement):
        if placement.num_experts != num_experts:
            raise ValueError(f"placement is for {placement.num_experts} experts, the model "
                             f"has {num_experts}")
        return placement
    return from_device_lists(placement, num_experts)


class ReplicaTable:
    """Lookup tensors of a placement: ``count [num_experts]`` replicas, ``rank``/``slot
    [num_experts, max_rep]`` the rank holding each replica and the expert's local slot there."""

    def __init__(self, placement: Placement | list[list[int]], num_experts: int, device=None):
        place = as_placement(placement, num_experts)
        self.placement = place.as_lists()
        per = place.slots_per_device
        local_slot = np.arange(place.slot_expert.size) % per      # slots are device by device
        order = np.lexsort((place.slot_device, place.slot_expert))  # by expert, then rank
        copies = place.replicas()
        width = int(copies.max())
        rank = np.empty((num_experts, width), dtype=np.int64)
        slot = np.empty((num_experts, width), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(copies)[:-1]])
        for e in range(num_experts):
            idx = order[starts[e]:starts[e] + copies[e]]
            pad = np.concatenate([idx, np.repeat(idx[:1], width - idx.size)])
            rank[e], slot[e] = place.slot_device[pad], local_slot[pad]
        self.count = torch.as_tensor(copies, device=device)
        self.rank = torch.as_tensor(rank, device=device)
        self.slot = torch.as_tensor(slot, device=device)
        self.num_ranks = place.num_devices
        self.max_local = per

    def destinations(self, topk_idx: torch.Tensor, token_index: torch.Tensor):
        """``topk_idx [num_tokens, num_topk]``, ``token_index [num_tokens]`` -> ``(dest_rank,
        dest_slot)`` each ``[num_tokens, num_topk]``: where each (token, expert) pair goes."""
        rep = token_index.unsqueeze(1) % self.count[topk_idx]
        return self.rank[topk_idx, rep], self.slot[topk_idx, rep]


def pairs_off_rank(topk_idx, token_index, placement: list[list[int]], rank: int) -> int:
    """(token, expert) pairs that ``rank`` sends to another rank; a plain-Python recount of
    ``ReplicaTable.destinations`` for checking the measured bytes."""
    holders = {e: [r for r, ex in enumerate(placement) if e in ex]
               for e in range(1 + max(max(ex) for ex in placement if ex))}
    count = 0
    for t, experts in zip(token_index, topk_idx):
        for e in experts:
            ranks = holders[int(e)]
            count += ranks[int(t) % len(ranks)] != rank
    return count
