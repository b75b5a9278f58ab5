"""Write a calibrated profile as YAML and check that it loads like any other profile.

Efficiency tables are written as flow lists (``[[1, 0.31], [2, 0.17]]``); a header comment says
how the file was made. The file is validated with ``moesim.config.load_profile`` right after it
is written; a file that does not load is removed and the error raised.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from moesim.config import ConfigError, HardwareProfile, available_profiles, load_profile


class _Flow(list):
    """A list written in flow style."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence(
    "tag:yaml.org,2002:seq", v, flow_style=True))


def _flowify(obj, key: str = ""):
    if isinstance(obj, dict):
        return {k: _flowify(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        if obj and all(isinstance(v, (list, tuple)) for v in obj):
            return _Flow(_Flow(v) for v in obj)
        if all(not isinstance(v, (dict, list)) for v in obj):
            return _Flow(obj)
        return [_flowify(v) for v in obj]
    return obj


def base_reference(base: str, out: Path) -> str:
    """How ``out`` should name its base: the profile name when it resolves by name, else a
    path relative to ``out``'s folder."""
    text = str(base)
    if not text.endswith((".yaml", ".yml")) and text in available_profiles():
        return text
    path = Path(text).resolve()
    return os.path.relpath(path, Path(out).resolve().parent)


def render(doc: dict, header: list[str]) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    body = yaml.dump(_flowify(doc), Dumper=_Dumper, sort_keys=False, width=100,
                     allow_unicode=True, default_flow_style=False)
    return "\n".join(lines) + "\n" + body


def write_profile(doc: dict, out: str | Path, header: list[str]) -> HardwareProfile:
    """Write ``doc`` to ``out`` and return it loaded through ``load_profile``."""
    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError("expected a .yaml output path", field="--out", file=str(out))
    if doc.get("base") == out.stem:
        raise ConfigError(f"the calibrated profile may not share its base's name '{out.stem}' "
                          "(base: would resolve to itself)", field="--out", file=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(doc, header), encoding="utf-8")
    try:
        return load_profile(out)
    except ConfigError:
        out.unlink(missing_ok=True)
        raise
