"""Placement files: ``devices: [[expert ids of device 0], ...]`` plus ``metadata``.

``moesim predict --placement FILE`` (``moesim.inputs.load_placement_file``), measurement
and scenarios read ``devices`` and ignore the rest; ``metadata`` records how the placement was
chosen (strategy, predicted time, load imbalance, model, hardware, routing, moesim version).
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from moesim.config.errors import ConfigError
from moesim.core.placement import Placement
from moesim.inputs import load_placement_file, placement_devices


def write_placement(path: str | Path, place: Placement, metadata: dict | None = None) -> Path:
    """Write ``place`` as YAML (or JSON for ``.json``); one flow list per device."""
    path = Path(path)
    meta = {k: _plain(v) for k, v in (metadata or {}).items()}
    if path.suffix == ".json":
        path.write_text(json.dumps({"devices": place.as_lists(), "metadata": meta}, indent=1),
                        encoding="utf-8")
        return path
    lines = ["# expert placement written by moesim; 'devices' lists the expert ids of each EP rank",
             "devices:"]
    lines += [f"  - {json.dumps(ids)}" for ids in place.as_lists()]
    if meta:
        lines.append(yaml.safe_dump({"metadata": meta}, sort_keys=False).rstrip())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_placement(path: str | Path, num_experts: int) -> tuple[Placement, dict]:
    """(Placement, metadata) from a placement file; the device count is read from the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("placement file not found", file=str(path), field="placement")
    devices, data = placement_devices(path)
    return load_placement_file(path, num_experts, len(devices)), dict(data.get("metadata") or {})


def _plain(value):
    """numpy scalars and tuples to YAML-safe Python values."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
