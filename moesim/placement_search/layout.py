"""What a placement algorithm is told about the EP group: devices, nodes, slots and groups.

A placement algorithm is a function ``(loads [num_experts], layout) -> Placement``. ``loads`` is
any non-negative per-expert load (expected tokens, inclusion probabilities ``q``, counts from a
trace); only ratios matter. ``Layout`` carries the rest: ``num_devices`` EP ranks that fill
scale-up domains ("nodes") of ``domain_size`` devices in order (as
``moesim.core.traffic.node_of_device``), ``redundant_slots`` extra expert copies to hand out
(EPLB's ``num_physical_experts - num_logical_experts``), the model's routing groups
(``num_groups``, ``topk_groups``) and an optional ``proxy`` that turns per-device loads into
seconds for local search (see ``moesim.placement_search.proxy``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moesim.config.errors import ConfigError
from moesim.core.placement import Placement, from_device_lists


@dataclass(frozen=True)
class Layout:
    num_devices: int
    domain_size: int = 1
    redundant_slots: int = 0
    num_groups: int = 1
    topk_groups: int = 1
    proxy: object | None = None  # a ``proxy.SlotCost``; None: balance expected load only

    def __post_init__(self):
        if self.num_devices < 1:
            raise ConfigError(f"ep must be >= 1, got {self.num_devices}", field="ep")
        if self.domain_size < 1 or self.redundant_slots < 0:
            raise ConfigError("domain_size must be >= 1 and redundant slots >= 0",
                              field="redundant")

    @property
    def devices_per_node(self) -> int:
        return min(self.domain_size, self.num_devices)

    @property
    def num_nodes(self) -> int:
        return -(-self.num_devices // self.devices_per_node)

    def node_of_device(self) -> np.ndarray:
        """Node index of each EP rank ``[num_devices]``."""
        return np.arange(self.num_devices) // self.devices_per_node

    def slots_per_device(self, num_experts: int) -> int:
        """Slots on every device; a ConfigError unless ``ep`` divides experts + redundant."""
        slots = num_experts + self.redundant_slots
        if slots % self.num_devices:
            raise ConfigError(f"ep ({self.num_devices}) must divide experts + redundant slots "
                              f"({num_experts} + {self.redundant_slots})", field="redundant")
        if self.redundant_slots > num_experts * (self.num_devices - 1):
            raise ConfigError(f"{self.redundant_slots} redundant slots exceed what "
                              f"{self.num_devices} devices hold without duplicating an expert on "
                              "a device", field="redundant")
        return slots // self.num_devices

    def node_limited(self, num_experts: int) -> bool:
        """True when whole routing groups can live on single nodes (EPLB's hierarchical case):
        more than one group, equal nodes, groups divisible over nodes."""
        return (self.num_groups > 1 and self.num_nodes > 1
                and self.num_devices % self.devices_per_node == 0
                and self.num_groups % self.num_nodes == 0 and num_experts % self.num_groups == 0)

    def with_redundant(self, redundant_slots: int) -> Layout:
        return replace(self, redundant_slots=int(redundant_slots))


def from_slots(slot_expert: np.ndarray, slot_device: np.ndarray, num_devices: int,
               num_experts: int) -> Placement:
    """A Placement from parallel slot arrays in any order."""
    devices = [[] for _ in range(num_devices)]
    for e, d in zip(np.asarray(slot_expert).tolist(), np.asarray(slot_device).tolist()):
        devices[d].append(e)
    return from_device_lists([sorted(d) for d in devices], num_experts)
