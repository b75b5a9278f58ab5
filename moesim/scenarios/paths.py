"""Relative file paths in a scenario are read from the scenario's own folder.

A scenario may name files: a model (``model: my-moe.yaml`` or an HF ``config.json``), hardware
profiles (``hardware: [my-gpu.yaml]`` or ``{profile: my-gpu.yaml}``), a placement file, a routing
trace (``trace:FILE.npz@LAYER``, ``.npy``/``.csv`` ids), in the run settings or as sweep values.
Each relative path that exists beside the scenario is rewritten to that file (relative to the
working directory where possible), so ``moesim run path/to/scenario.yaml`` works from any
folder; a path that does not exist there is left as written (the working directory's, as
before). Names of presets and built-in kinds have no file suffix and are never touched.
"""
from __future__ import annotations

import os
from pathlib import Path

FILE_SUFFIXES = (".yaml", ".yml", ".json", ".npz", ".npy", ".csv", ".txt")
#: Fields whose values may be file paths, at the top level, under run: and as sweep axes.
PATH_FIELDS = ("model", "hardware", "placement", "routing")


def rebase(value, base: Path):
    """``value`` with a relative file path that exists under ``base`` pointed there."""
    if not isinstance(value, str):
        return value
    prefix, rest = ("trace:", value[len("trace:"):]) if value.startswith("trace:") else ("", value)
    file, at, layer = rest.partition("@")
    if Path(file).suffix.lower() not in FILE_SUFFIXES or Path(file).is_absolute():
        return value
    beside = base / file
    if not beside.is_file():
        return value
    try:
        shown = os.path.relpath(beside)
    except ValueError:  # another drive (Windows)
        shown = str(beside.resolve())
    return f"{prefix}{shown}{at}{layer}"


def _hardware(item, base: Path):
    if isinstance(item, dict) and "profile" in item:
        return {**item, "profile": rebase(item["profile"], base)}
    return rebase(item, base)


def _values(field: str, values, base: Path):
    if not isinstance(values, list):
        return values
    if field == "hardware":
        return [_hardware(v, base) for v in values]
    return [rebase(v, base) for v in values]


def rebase_scenario(data: dict, base: Path) -> dict:
    """A copy of a scenario mapping with its relative file paths read from ``base``."""
    out = dict(data)
    if isinstance(out.get("model"), str):
        out["model"] = rebase(out["model"], base)
    if isinstance(out.get("hardware"), list):
        out["hardware"] = [_hardware(item, base) for item in out["hardware"]]
    for key in ("placement", "routing"):
        if key in out:
            out[key] = rebase(out[key], base)
    if isinstance(out.get("run"), dict):
        out["run"] = {k: rebase(v, base) if k in PATH_FIELDS else v for k, v in out["run"].items()}
    sweep = out.get("sweep")
    if isinstance(sweep, dict):
        new = {}
        for key, values in sweep.items():
            if key == "zip" and isinstance(values, list):
                new[key] = [{k: _values(k, v, base) if k in PATH_FIELDS else v
                             for k, v in group.items()} if isinstance(group, dict) else group
                            for group in values]
            else:
                new[key] = _values(key, values, base) if key in PATH_FIELDS else values
        out["sweep"] = new
    return out
