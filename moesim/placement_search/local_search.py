"""Local search on top of a greedy placement: relieve the slowest device, one move at a time.

Moves, tried in this order each round (the proxy of ``layout.proxy`` scores them, see
``moesim.placement_search.proxy``):

- **swap**: exchange a slot of the slowest device with a slot of another device, when the larger
  of the two devices' new costs is below the slowest device's old cost;
- **re-replicate** (with redundant slots): turn a redundant copy of some expert, on a light
  device, into an extra copy of an expert held by the slowest device, when that lowers the
  maximum device cost.

Each accepted move lowers the sorted vector of device costs lexicographically, so the search
ends; ``max_moves`` bounds it. ``keep_nodes`` limits moves to devices of one node and keeps each
expert's copies on the node they started on (node-limited routing: groups stay on their node).
"""
from __future__ import annotations

import numpy as np

from moesim.core.placement import Placement
from moesim.placement_search.layout import Layout, from_slots
from moesim.placement_search.proxy import bind_proxy

TOL = 1e-12


class _State:
    def __init__(self, place: Placement, loads: np.ndarray, proxy):
        self.expert = place.slot_expert.copy()
        self.device = place.slot_device.copy()
        self.loads = np.asarray(loads, dtype=float)
        self.proxy = proxy
        self.num_devices = place.num_devices
        self.num_experts = place.num_experts
        self.refresh()

    def refresh(self) -> None:
        self.copies = np.bincount(self.expert, minlength=self.num_experts)
        self.stats = self.proxy.slot_stats(self.loads[self.expert] / self.copies[self.expert])
        self.sums = np.zeros((self.num_devices, self.stats.shape[-1]))
        np.add.at(self.sums, self.device, self.stats)
        self.cost = self.proxy.device_cost(self.sums)
        self.holds = np.zeros((self.num_devices, self.num_experts), dtype=bool)
        self.holds[self.device, self.expert] = True


def improve(place: Placement, loads: np.ndarray, layout: Layout, *, keep_nodes: bool = False,
            max_moves: int | None = None) -> Placement:
    """A placement whose slowest device (by ``layout.proxy``) is no slower than ``place``'s."""
    state = _State(place, loads, bind_proxy(layout.proxy, loads))
    node = layout.node_of_device()
    limit = max_moves if max_moves is not None else 20 * place.num_devices + 100
    for _ in range(limit):
        if not (_swap(state, node, keep_nodes) or _rereplicate(state, node, keep_nodes)):
            break
    return from_slots(state.expert, state.device, place.num_devices, place.num_experts)


def _swap(state: _State, node: np.ndarray, keep_nodes: bool) -> bool:
    """Best improving swap between the slowest device and any other; True if one was made."""
    d = int(np.argmax(state.cost))
    mine = np.flatnonzero(state.device == d)
    other = np.flatnonzero(state.device != d)
    if keep_nodes:
        other = other[node[state.device[other]] == node[d]]
    if other.size == 0:
        return False
    a_stats, b_stats = state.stats[mine][:, None, :], state.stats[other][None, :, :]
    new_d = state.proxy.device_cost(state.sums[d] - a_stats + b_stats)  # [A, B]
    new_o = state.proxy.device_cost(state.sums[state.device[other]][None] - b_stats + a_stats)
    worse = np.maximum(new_d, new_o)
    ea, eb = state.expert[mine][:, None], state.expert[other][None, :]
    # b's expert must not already be on d, nor a's expert on b's device
    valid = ~state.holds[d][eb] & ~state.holds[state.device[other][None, :], ea] & (ea != eb)
    worse = np.where(valid, worse, np.inf)
    i, j = np.unravel_index(np.argmin(worse), worse.shape)
    if not worse[i, j] < state.cost[d] - TOL * max(1.0, abs(state.cost[d])):
        return False
    sa, sb = mine[i], other[j]
    state.device[sa], state.device[sb] = state.device[sb], state.device[sa]
    state.refresh()
    return True


def _rereplicate(state: _State, node: np.ndarray, keep_nodes: bool, lightest: int = 8) -> bool:
    """Move a redundant copy from a light device's expert to a hot expert of the slowest one."""
    if (state.copies <= 1).all():
        return False
    d = int(np.argmax(state.cost))
    old_max = float(state.cost.max())
    hot = np.unique(state.expert[state.device == d])
    light = np.argsort(state.cost)[:lightest]
    donors = np.flatnonzero(np.isin(state.device, light) & (state.copies[state.expert] > 1))
    best, best_max = None, old_max - TOL * max(1.0, abs(old_max))
    for e in hot:
        home = node[state.device[state.expert == e]]
        for s in donors:
            dev = state.device[s]
            if state.expert[s] == e or state.holds[dev, e]:
                continue
            if keep_nodes and (home != node[dev]).any():
                continue
            trial = _cost_after(state, s, e)
            if trial < best_max:
                best, best_max = (s, e), trial
    if best is None:
        return False
    state.expert[best[0]] = best[1]
    state.refresh()
    return True


def _cost_after(state: _State, slot: int, expert: int) -> float:
    """Maximum device cost if ``slot`` held ``expert`` instead of its current expert."""
    new_expert = state.expert.copy()
    new_expert[slot] = expert
    copies = np.bincount(new_expert, minlength=state.num_experts)
    touched = np.flatnonzero((new_expert == expert) | (state.expert == state.expert[slot]))
    stats = state.stats.copy()
    stats[touched] = state.proxy.slot_stats(state.loads[new_expert[touched]]
                                            / copies[new_expert[touched]])
    sums = state.sums.copy()
    np.add.at(sums, state.device[touched], stats[touched] - state.stats[touched])
    return float(state.proxy.device_cost(sums).max())
