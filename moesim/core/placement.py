"""Expert placement on an expert-parallel (EP) group of ``num_devices`` devices.

A placement is a list of *slots*: slot ``i`` holds a copy of expert ``slot_expert[i]`` on device
``slot_device[i]`` and receives the fraction ``slot_share[i]`` of that expert's tokens (replicas
of one expert split its tokens evenly, as EPLB's redundant experts do). Every device holds the
same number of slots. Specs: ``contiguous``, ``round-robin``, ``balanced`` (greedy by expected
load), ``replicated:R`` (R redundant slots for the hottest experts, then balanced), or a YAML/JSON
file ``{devices: [[expert ids of device 0], ...]}``.
"""
from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moesim.config.errors import ConfigError

PLACEMENT_KINDS = ("contiguous", "round-robin", "balanced", "replicated")


@dataclass(frozen=True, eq=False)
class Placement:
    slot_expert: np.ndarray  # [num_slots] int
    slot_device: np.ndarray  # [num_slots] int
    slot_share: np.ndarray  # [num_slots] float, sums to 1 over the slots of one expert
    num_devices: int
    num_experts: int

    @property
    def slots_per_device(self) -> int:
        return self.slot_expert.size // self.num_devices

    def replicas(self) -> np.ndarray:
        """Copies of each expert ``[num_experts]``."""
        return np.bincount(self.slot_expert, minlength=self.num_experts)

    def device_of_expert_slots(self, device: int) -> np.ndarray:
        return self.slot_expert[self.slot_device == device]

    def device_load(self, q: np.ndarray) -> np.ndarray:
        """Expected (token, expert) pairs per token landing on each device ``[num_devices]``."""
        return np.bincount(self.slot_device, weights=q[self.slot_expert] * self.slot_share,
                           minlength=self.num_devices)

    def as_lists(self) -> list[list[int]]:
        return [self.slot_expert[self.slot_device == d].tolist() for d in range(self.num_devices)]


def _from_lists(devices: list[list[int]], experts: int, source: str = "placement") -> Placement:
    num_devices = len(devices)
    sizes = {len(d) for d in devices}
    if len(sizes) != 1:
        raise ConfigError(f"every device must hold the same number of experts, got sizes "
                          f"{sorted(sizes)}", field=source)
    slot_expert = np.array([e for dev in devices for e in dev], dtype=np.int64)
    slot_device = np.repeat(np.arange(num_devices), sizes.pop())
    if slot_expert.min() < 0 or slot_expert.max() >= experts:
        raise ConfigError(f"expert ids must be in [0, {experts - 1}]", field=source)
    copies = np.bincount(slot_expert, minlength=experts)
    if (copies == 0).any():
        missing = np.flatnonzero(copies == 0)[:5].tolist()
        raise ConfigError(f"every expert needs at least one slot; missing {missing}", field=source)
    for dev, ids in enumerate(devices):
        if len(set(ids)) != len(ids):
            raise ConfigError(f"device {dev} holds an expert twice", field=source)
    return Placement(slot_expert, slot_device, 1.0 / copies[slot_expert], num_devices, experts)


def _check_divides(experts: int, num_devices: int, redundant: int = 0) -> int:
    slots = experts + redundant
    if slots % num_devices:
        raise ConfigError(f"ep ({num_devices}) must divide experts + redundant slots "
                          f"({experts} + {redundant}); expected an ep that divides {slots}, or "
                          f"placement 'replicated:R' with (experts + R) % ep == 0", field="ep")
    return slots // num_devices


def contiguous(experts: int, num_devices: int) -> Placement:
    """Device d holds experts [d*E/D, (d+1)*E/D)."""
    per = _check_divides(experts, num_devices)
    return _from_lists([list(range(d * per, (d + 1) * per)) for d in range(num_devices)], experts)


def round_robin(experts: int, num_devices: int) -> Placement:
    """Expert e on device e mod D."""
    _check_divides(experts, num_devices)
    return _from_lists([list(range(d, experts, num_devices)) for d in range(num_devices)], experts)


def _pack(slot_loads: list[tuple[float, int]], num_devices: int, per_device: int) -> list[list[int]]:
    """Longest-processing-time greedy: heaviest slot to the least-loaded device with room and
    without that expert already."""
    devices: list[list[int]] = [[] for _ in range(num_devices)]
    heap = [(0.0, d) for d in range(num_devices)]
    for load, expert in sorted(slot_loads, key=lambda t: (-t[0], t[1])):
        skipped = []
        while True:
            dev_load, dev = heapq.heappop(heap)
            if len(devices[dev]) < per_device and expert not in devices[dev]:
                break
            skipped.append((dev_load, dev))
        devices[dev].append(expert)
        if len(devices[dev]) < per_device:
            heapq.heappush(heap, (dev_load + load, dev))
        for item in skipped:
            heapq.heappush(heap, item)
    return devices


def balanced(q: np.ndarray, num_devices: int) -> Placement:
    """Greedy (LPT) packing of experts by expected load ``q``, equal expert count per device."""
    experts = q.size
    per = _check_divides(experts, num_devices)
    return _from_lists(_pack([(float(q[e]), e) for e in range(experts)], num_devices, per), experts)


def replica_counts(loads: np.ndarray, num_slots: int, max_copies: int) -> np.ndarray:
    """Copies per expert ``[num_experts]`` summing to ``num_slots``, at most ``max_copies`` each:
    each extra slot goes to the expert whose per-copy load is highest (EPLB's replication)."""
    loads = np.asarray(loads, dtype=float)
    copies = np.ones(loads.size, dtype=np.int64)
    if num_slots < loads.size or loads.size * max_copies < num_slots:
        raise ConfigError(f"cannot spread {num_slots} slots over {loads.size} experts with at "
                          f"most {max_copies} copies each", field="redundant")
    heap = [(-float(loads[e]), e) for e in range(loads.size)]
    heapq.heapify(heap)
    for _ in range(num_slots - loads.size):
        while True:
            _, e = heapq.heappop(heap)
            if copies[e] < max_copies:
                break
        copies[e] += 1
        heapq.heappush(heap, (-float(loads[e]) / copies[e], e))
    return copies


def replicated(q: np.ndarray, num_devices: int, redundant: int) -> Placement:
    """EPLB-style: give each of ``redundant`` extra slots to the expert whose per-copy load is
    highest (replicas split tokens evenly), then pack slots greedily by per-copy load."""
    experts = q.size
    per = _check_divides(experts, num_devices, redundant)
    if redundant > experts * (num_devices - 1):
        raise ConfigError(f"{redundant} redundant slots exceed what {num_devices} devices can "
                          "hold without duplicating an expert on a device", field="placement")
    copies = replica_counts(q, experts + redundant, num_devices)
    slots = [(float(q[e]) / copies[e], e) for e in range(experts) for _ in range(copies[e])]
    return _from_lists(_pack(slots, num_devices, per), experts)


def load_placement_file(path: str | Path, experts: int, num_devices: int) -> Placement:
    from moesim.config.yamlio import load_yaml

    path = Path(path)
    data = json.loads(path.read_text()) if path.suffix == ".json" else load_yaml(path).data
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, list) or not all(isinstance(d, list) for d in devices):
        raise ConfigError("expected 'devices: [[expert ids of device 0], ...]'", file=str(path),
                          field="devices")
    if len(devices) != num_devices:
        raise ConfigError(f"file has {len(devices)} devices; expected ep = {num_devices}",
                          file=str(path), field="devices")
    try:
        return _from_lists(devices, experts, source="devices")
    except ConfigError as exc:
        raise exc.located(file=str(path)) from None


def build_placement(spec: str, experts: int, num_devices: int, q: np.ndarray) -> Placement:
    """Placement from its spec string (see module docstring)."""
    if num_devices < 1:
        raise ConfigError(f"ep must be >= 1, got {num_devices}", field="ep")
    kind, _, arg = str(spec).partition(":")
    if kind == "contiguous":
        return contiguous(experts, num_devices)
    if kind == "round-robin":
        return round_robin(experts, num_devices)
    if kind == "balanced":
        return balanced(q, num_devices)
    if kind == "replicated":
        try:
            redundant = int(arg) if arg else num_devices
        except ValueError:
            raise ConfigError(f"bad redundant slot count in '{spec}'; expected 'replicated:R'",
                              field="placement") from None
        return replicated(q, num_devices, redundant)
    path = Path(spec)
    if path.suffix in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise ConfigError("placement file not found", file=str(path), field="placement")
        return load_placement_file(path, experts, num_devices)
    from moesim.config.errors import unknown

    raise ConfigError(unknown("placement", spec, PLACEMENT_KINDS) +
                      " (or 'replicated:R', or a .yaml/.json placement file)", field="placement")


def from_device_lists(devices: list[list[int]], experts: int) -> Placement:
    """A Placement from expert ids per device (the slots of device 0 first, in list order;
    replicas split their expert's tokens evenly); validated as placement files are."""
    return _from_lists([[int(e) for e in d] for d in devices], experts)
