"""Placement algorithms, registered by name. Each is ``(loads [num_experts], layout) -> Placement``.

Built in:

- ``contiguous``, ``round-robin``: ignore the loads and the redundant slots (the baselines);
- ``greedy``: replicate hot experts by per-copy load, then LPT-pack all slots over all devices
  (EPLB's global policy; ``moesim.core.placement.replicated``/``balanced`` do the same);
- ``eplb``: EPLB's hierarchical policy (deepseek-ai/EPLB ``rebalance_experts_hierarchical``):
  pack whole routing groups onto nodes evenly, replicate hot experts within each node, pack each
  node's copies onto its GPUs. Each group then lives on one node, so group-limited routing
  (``topk_groups`` of ``num_groups``) is node-limited routing. Falls back to ``greedy`` when the
  groups do not divide over the nodes, as EPLB does;
- ``greedy+ls``, ``eplb+ls``: the same followed by local search
  (``moesim.placement_search.local_search``; ``eplb+ls`` keeps groups on their nodes).

Register your own with ``@register("name")`` or pass the callable wherever a name is accepted.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from moesim.config.errors import ConfigError, unknown
from moesim.core import placement as core_placement
from moesim.core.placement import Placement
from moesim.placement_search import packing
from moesim.placement_search.layout import Layout, from_slots
from moesim.placement_search.local_search import improve

PlacementFn = Callable[[np.ndarray, Layout], Placement]
STRATEGIES: dict[str, PlacementFn] = {}
#: Strategies that do not use redundant slots (compared at zero replication only).
NO_REPLICATION = {"contiguous", "round-robin"}


def register(name: str, fn: PlacementFn | None = None):
    """Register ``fn`` under ``name``; usable as a decorator."""
    def add(f: PlacementFn) -> PlacementFn:
        STRATEGIES[name] = f
        return f
    return add(fn) if fn is not None else add


def resolve(strategy: str | PlacementFn) -> tuple[str, PlacementFn]:
    """(name, function) for a registered name, a ``module:function`` path or a callable."""
    if callable(strategy):
        return getattr(strategy, "__name__", "custom"), strategy
    name = str(strategy)
    if name in STRATEGIES:
        return name, STRATEGIES[name]
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            return name, getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import placement strategy '{name}': {exc}",
                              field="strategy") from None
    raise ConfigError(unknown("placement strategy", name, STRATEGIES) +
                      " (or 'module:function')", field="strategy")


def run_strategy(strategy: str | PlacementFn, loads: np.ndarray, layout: Layout) -> Placement:
    """Call a strategy and check that what it returns fits the layout."""
    name, fn = resolve(strategy)
    place = fn(np.asarray(loads, dtype=float), layout)
    if not isinstance(place, Placement):
        raise ConfigError(f"strategy '{name}' returned {type(place).__name__}, not a Placement",
                          field="strategy")
    if place.num_devices != layout.num_devices or place.num_experts != len(loads):
        raise ConfigError(f"strategy '{name}' returned a placement for {place.num_experts} experts "
                          f"on {place.num_devices} devices; expected {len(loads)} on "
                          f"{layout.num_devices}", field="strategy")
    return place


@register("contiguous")
def contiguous(loads: np.ndarray, layout: Layout) -> Placement:
    return core_placement.contiguous(loads.size, layout.num_devices)


@register("round-robin")
def round_robin(loads: np.ndarray, layout: Layout) -> Placement:
    return core_placement.round_robin(loads.size, layout.num_devices)


@register("greedy")
def greedy(loads: np.ndarray, layout: Layout) -> Placement:
    """Replicate by per-copy load over all devices, then LPT-pack all slots."""
    per = layout.slots_per_device(loads.size)
    experts = np.arange(loads.size)
    devices = np.arange(layout.num_devices)
    slot_expert, slot_device = packing.replicate_and_pack(loads, experts, devices,
                                                          per * layout.num_devices)
    return from_slots(slot_expert, slot_device, layout.num_devices, loads.size)


@register("eplb")
def eplb_hierarchical(loads: np.ndarray, layout: Layout) -> Placement:
    """Groups -> nodes (even packing by group load), then replicate and pack within each node."""
    if not layout.node_limited(loads.size):
        return greedy(loads, layout)
    per = layout.slots_per_device(loads.size)
    nodes, gpn = layout.num_nodes, layout.devices_per_node
    group_size = loads.size // layout.num_groups
    group_of = np.arange(loads.size) // group_size
    group_load = np.bincount(group_of, weights=loads, minlength=layout.num_groups)
    node_of_group = packing.pack(group_load, np.arange(layout.num_groups), nodes,
                                 layout.num_groups // nodes)
    slot_expert, slot_device = [], []
    for n in range(nodes):
        experts = np.flatnonzero(node_of_group[group_of] == n)
        devices = np.arange(n * gpn, (n + 1) * gpn)
        se, sd = packing.replicate_and_pack(loads, experts, devices, per * gpn)
        slot_expert.append(se)
        slot_device.append(sd)
    return from_slots(np.concatenate(slot_expert), np.concatenate(slot_device),
                      layout.num_devices, loads.size)


@register("greedy+ls")
def greedy_local(loads: np.ndarray, layout: Layout) -> Placement:
    return improve(greedy(loads, layout), loads, layout)


@register("eplb+ls")
def eplb_local(loads: np.ndarray, layout: Layout) -> Placement:
    return improve(eplb_hierarchical(loads, layout), loads, layout,
                   keep_nodes=layout.node_limited(loads.size))
