"""Spec strings that name files, turned into the arrays ``moesim.core`` takes.

``moesim.core`` is pure: it knows ``uniform``, ``zipf:S`` ... and ``contiguous``, ``balanced`` ...
but reads no file. A ``trace:PATH[@LAYER]`` routing (expert ids, see
:func:`moesim.traces.io.load_trace`) and a ``.yaml``/``.json`` placement file
(``devices: [[expert ids of device 0], ...]``) are read here, then handed to core as arrays.
Everything that accepts a routing or placement spec from a user resolves it through this module.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from moesim.config.errors import ConfigError
from moesim.config.specs import parse_routing
from moesim.core import placement, routing
from moesim.traces.io import load_trace

PLACEMENT_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def inclusion_probs(spec: str, experts: int, top_k: int, seed: int = 0) -> np.ndarray:
    """``q[e]`` of a routing spec (see :func:`moesim.core.routing.inclusion_probs`); a
    ``trace:`` spec's file is read here."""
    parsed = parse_routing(spec)
    ids = load_trace(parsed.path) if parsed.kind == "trace" else None
    return routing.inclusion_probs(parsed, experts, top_k, seed, trace_ids=ids)


def is_placement_file(spec: str) -> bool:
    kind = str(spec).partition(":")[0]
    return kind not in placement.PLACEMENT_KINDS and Path(spec).suffix in PLACEMENT_FILE_SUFFIXES


def build_placement(spec: str, experts: int, num_devices: int, q: np.ndarray):
    """A ``Placement`` from a spec (see :func:`moesim.core.placement.build_placement`) or from a
    placement file, which must list ``num_devices`` devices."""
    if num_devices >= 1 and is_placement_file(spec):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError("placement file not found", file=str(path), field="placement")
        return load_placement_file(path, experts, num_devices)
    return placement.build_placement(spec, experts, num_devices, q)


def placement_devices(path: str | Path) -> tuple[list, dict]:
    """(``devices`` lists, the whole document) of a placement file (YAML, or JSON by suffix)."""
    from moesim.config.files import load_json_file
    from moesim.config.yamlio import load_yaml

    path = Path(path)
    data = load_json_file(path, "placement") if path.suffix == ".json" else load_yaml(path).data
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, list) or not all(
            isinstance(d, list) and d and all(type(e) is int for e in d) for d in devices):
        raise ConfigError("expected 'devices: [[expert ids of device 0], ...]' (non-empty lists "
                          "of integers)", file=str(path), field="devices")
    return devices, data


def load_placement_file(path: str | Path, experts: int, num_devices: int):
    """The ``Placement`` a placement file describes; its device count must be ``num_devices``."""
    devices, _ = placement_devices(path)
    if len(devices) != num_devices:
        raise ConfigError(f"file has {len(devices)} devices; expected ep = {num_devices}",
                          file=str(path), field="devices")
    try:
        return placement.from_device_lists(devices, experts, source="devices")
    except ConfigError as exc:
        raise exc.located(file=str(path)) from None
