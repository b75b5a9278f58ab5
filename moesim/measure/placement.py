"""Expert placement for expert parallelism: which rank holds which experts, and replica choice.

``placement[rank]`` lists the expert ids that rank holds (its local slots, in order). An expert
may sit on several ranks; the (token, expert) pairs for it are split among its replicas
round-robin by token index: replica ``token % num_replicas`` in rank order.
"""
from __future__ import annotations

import torch


def check_placement(placement: list[list[int]], num_experts: int) -> list[list[int]]:
    """Validate: ids in range, no expert twice on one rank, every expert on some rank."""
    placement = [[int(e) for e in experts] for experts in placement]
    if not placement:
        raise ValueError("placement needs at least one rank")
    for rank, experts in enumerate(placement):
        bad = [e for e in experts if not 0 <= e < num_experts]
        if bad:
            raise ValueError(f"rank {rank} holds expert {bad[0]}, outside 0..{num_experts - 1}")
        if len(set(experts)) != len(experts):
            raise ValueError(f"rank {rank} lists an expert twice: {experts}")
    missing = sorted(set(range(num_experts)) - {e for ex in placement for e in ex})
    if missing:
        raise ValueError(f"experts {missing[:8]} are on no rank")
    return placement


def contiguous_placement(num_experts: int, num_ranks: int) -> list[list[int]]:
    """``num_experts / num_ranks`` consecutive experts per rank (Megatron/DeepEP default)."""
    if num_experts % num_ranks:
        raise ValueError(f"num_experts ({num_experts}) must divide into num_ranks ({num_ranks})")
    per = num_experts // num_ranks
    return [list(range(r * per, (r + 1) * per)) for r in range(num_ranks)]


class ReplicaTable:
    """Lookup tensors: ``count [num_experts]`` replicas, ``rank``/``slot [num_experts, max_rep]``
    the rank holding each replica and the expert's local slot there."""

    def __init__(self, placement: list[list[int]], num_experts: int, device=None):
        self.placement = check_placement(placement, num_experts)
        replicas: list[list[tuple[int, int]]] = [[] for _ in range(num_experts)]
        for rank, experts in enumerate(self.placement):
            for slot, e in enumerate(experts):
                replicas[e].append((rank, slot))
        width = max(len(r) for r in replicas)
        pad = [r + [r[0]] * (width - len(r)) for r in replicas]
        self.count = torch.tensor([len(r) for r in replicas], device=device)
        self.rank = torch.tensor([[p[0] for p in r] for r in pad], device=device)
        self.slot = torch.tensor([[p[1] for p in r] for r in pad], device=device)
        self.num_ranks = len(self.placement)
        self.max_local = max(len(ex) for ex in self.placement)

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
