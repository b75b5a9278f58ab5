"""Sweep grids: parse ``sweep:`` into axes, expand a scenario into a table of configs.

``sweep`` maps a config field to a list of values, or to a range
(``{start, stop, step}`` inclusive, or ``{start, stop, num, scale: log|linear}``); ``zip`` holds
groups of fields whose lists have equal length and vary together. The grid is the product of the
axes (a zip group is one axis), repeated for every hardware profile.
"""
from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np
import pandas as pd

from moesim.config import MODEL_FIELDS
from moesim.config.errors import unknown
from moesim.config.limits import MAX_SWEEP_POINTS
from moesim.config.run import RUN_FIELDS
from moesim.config.yamlio import LocatedYaml
from moesim.predict import RUN_DEFAULTS

SWEEP_FIELDS = MODEL_FIELDS + RUN_FIELDS
RANGE_KEYS = {"start", "stop", "step", "num", "scale"}
MAX_POINTS = MAX_SWEEP_POINTS  # see moesim.config.limits


@dataclass(frozen=True)
class Axis:
    """One sweep axis: ``fields`` vary together; ``values[i]`` is one tuple, a value per field."""

    fields: tuple[str, ...]
    values: tuple[tuple, ...]
    path: tuple  # where the axis sits in the YAML, for error messages


def parse_sweep(raw: dict | None, doc: LocatedYaml, present: bool) -> tuple[Axis, ...]:
    """Axes from the ``sweep`` mapping; an empty sweep or an empty list is an error."""
    if not present:
        return ()
    if not raw:
        raise doc.error("empty sweep: expected at least one field with a list of values "
                        "(or remove 'sweep')", ("sweep",))
    axes = []
    for key, value in raw.items():
        if key == "zip":
            axes.extend(_zip_groups(value, doc))
        else:
            _check_field(key, doc, ("sweep", key))
            vals = _values(value, doc, ("sweep", key))
            axes.append(Axis((key,), tuple((v,) for v in vals), ("sweep", key)))
    _check_unique(axes, doc)
    return tuple(axes)


def _zip_groups(value, doc: LocatedYaml) -> list[Axis]:
    groups = value if isinstance(value, list) else [value]
    if not groups or not all(isinstance(g, dict) and g for g in groups):
        raise doc.error("expected a list of groups, each a mapping of field: [values] "
                        "with equal-length lists", ("sweep", "zip"))
    axes = []
    for i, group in enumerate(groups):
        prefix = ("sweep", "zip", i) if isinstance(value, list) else ("sweep", "zip")
        columns = {}
        for key, vals in group.items():
            _check_field(key, doc, prefix + (key,))
            columns[key] = _values(vals, doc, prefix + (key,), distinct=False)
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            desc = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise doc.error(f"zip group lists must have equal lengths; got {desc}", prefix)
        rows = tuple(zip(*columns.values()))
        if len(set(map(repr, rows))) != len(rows):  # a column may repeat; a row may not
            raise doc.error(f"repeated rows in zip group ({', '.join(columns)}); expected each "
                            "combination once", prefix)
        axes.append(Axis(tuple(columns), rows, prefix))
    return axes


def _check_field(key, doc: LocatedYaml, path: tuple) -> None:
    if key not in SWEEP_FIELDS:
        raise doc.error(unknown("sweep field", str(key), SWEEP_FIELDS + ("zip",)), path)


def _check_unique(axes: list[Axis], doc: LocatedYaml) -> None:
    seen: set[str] = set()
    for axis in axes:
        for name in axis.fields:
            if name in seen:
                raise doc.error(f"'{name}' is swept twice; expected each field in one axis",
                                axis.path)
            seen.add(name)


def _values(value, doc: LocatedYaml, path: tuple, distinct: bool = True) -> list:
    if isinstance(value, dict):
        return _range(value, doc, path)
    if not isinstance(value, list):
        raise doc.error(f"expected a list of values or a range {{start, stop, step|num}}, "
                        f"got {value!r}", path)
    if not value:
        raise doc.error("empty list: expected at least one value", path)
    for i, item in enumerate(value):
        if isinstance(item, (dict, list)) or item is None:
            raise doc.error(f"expected a scalar value, got {item!r}", path + (i,))
    if distinct and len(set(map(repr, value))) != len(value):
        raise doc.error(f"repeated values in {value!r}; expected distinct values", path)
    return list(value)


def _number(spec: dict, key: str, doc: LocatedYaml, path: tuple):
    """``spec[key]`` if it is a finite number (not a bool), else a located ConfigError."""
    value = spec[key]
    try:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value)
    except OverflowError:  # an int beyond float range
        ok = False
    if not ok:
        raise doc.error(f"range '{key}' must be a finite number, got {value!r}", path + (key,))
    return value


def _range(spec: dict, doc: LocatedYaml, path: tuple) -> list:
    """Values of ``{start, stop, step}`` (inclusive) or ``{start, stop, num, scale}``; the count
    is checked against MAX_POINTS before anything is built."""
    bad = set(spec) - RANGE_KEYS
    if bad:
        raise doc.error(unknown("range key", sorted(bad)[0], RANGE_KEYS), path + (sorted(bad)[0],))
    if "start" not in spec or "stop" not in spec:
        raise doc.error("a range needs numeric 'start' and 'stop'", path)
    start, stop = _number(spec, "start", doc, path), _number(spec, "stop", doc, path)
    if ("step" in spec) == ("num" in spec):
        raise doc.error("a range needs exactly one of 'step' (> 0) or 'num' (>= 1)", path)
    key = "step" if "step" in spec else "num"
    size = _number(spec, key, doc, path)
    if size <= 0 or (key == "num" and (size != int(size) or size < 1)):
        raise doc.error("a range needs exactly one of 'step' (> 0) or 'num' (>= 1, whole)",
                        path + (key,))
    if stop < start:
        raise doc.error(f"range stop ({stop}) < start ({start})", path)
    count = int(size) if key == "num" else (stop - start) / size + 1
    if count > MAX_POINTS:
        raise doc.error(f"the range has {count:,.0f} values; the limit is {MAX_POINTS:,} "
                        "(limits.MAX_SWEEP_POINTS)", path)
    scale = spec.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise doc.error(f"unknown scale {scale!r}; expected 'linear' or 'log'", path + ("scale",))
    if key == "step":
        vals = np.arange(start, stop + size * 1e-9, size)
    elif scale == "log":
        if start <= 0:
            raise doc.error("a log range needs start > 0", path + ("start",))
        vals = np.geomspace(start, stop, int(size))
    else:
        vals = np.linspace(start, stop, int(size))
    if all(isinstance(v, int) for v in (start, stop, spec.get("step", 1))):
        return list(dict.fromkeys(int(round(v)) for v in vals))
    return [float(v) for v in vals]


def expand(scenario) -> pd.DataFrame:
    """The scenario's configs: one row per grid point and profile, inputs only.

    Columns: ``model``, ``hardware``, every model field (preset values resolved, so the table
    describes itself), the fixed and swept run fields, and per-profile overrides.
    """
    grid = grid_frame(scenario.axes)
    base = {k: v for k, v in scenario.model.model_dump().items() if k in MODEL_FIELDS}
    fixed = {**base, **scenario.model_fields, **scenario.run}
    frames = []
    for hw in scenario.hardware:
        frame = grid.copy()
        for key, value in fixed.items():
            if key not in frame.columns:
                frame[key] = value
        for key, value in hw.overrides.items():
            frame[key] = value
        frame.insert(0, "hardware", hw.name)
        frame.insert(0, "model", scenario.model_ref)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    for key, value in RUN_DEFAULTS.items():  # a run field overridden for some profiles only
        if key in table.columns:
            filled = table[key].where(table[key].notna(), value)
            table[key] = filled.astype("int64") if isinstance(value, int) else filled
    order = ["model", "hardware"] + [c for c in SWEEP_FIELDS if c in table.columns]
    return table[order]


def grid_frame(axes) -> pd.DataFrame:
    """The product of ``axes`` as a DataFrame (first axis slowest); one empty row if none."""
    sizes = [len(axis.values) for axis in axes]
    total = int(np.prod(sizes)) if sizes else 1
    if total > MAX_POINTS:
        raise ValueError(f"the sweep has {total:,} points; the limit is {MAX_POINTS:,}")
    index = np.indices(sizes).reshape(len(sizes), -1) if sizes else np.zeros((0, 1), int)
    columns = {}
    for axis, idx in zip(axes, index):
        for j, name in enumerate(axis.fields):
            values = pd.Series([v[j] for v in axis.values])
            columns[name] = values.iloc[idx].reset_index(drop=True)
    return pd.DataFrame(columns, index=pd.RangeIndex(total))
