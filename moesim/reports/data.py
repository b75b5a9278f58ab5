"""What a report knows about its table: swept axes, linked (zipped) axes, profiles, units.

Human units appear only in reports: ms (1e-3 s), GB and GB/s (1e9), TFLOP/s (1e12).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from moesim.config import MODEL_FIELDS
from moesim.config.run import RUN_FIELDS
from moesim.core.layer import PHASES

MS = 1e-3
GB = 1e9
TFLOPS = 1e12
#: Colours per profile, in table order (plotly's default qualitative palette).
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692",
           "#B6E880", "#FF97FF", "#FECB52")
PHASE_COLORS = dict(zip(PHASES, ("#8c564b", "#bcbd22", "#1f77b4", "#2ca02c", "#98df8a",
                                 "#ff7f0e", "#7f7f7f")))
INPUT_COLUMNS = ("model",) + MODEL_FIELDS + RUN_FIELDS


@dataclass
class ReportData:
    """A results table plus its metadata (``metadata.json`` of the run, possibly empty)."""

    table: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "hardware" not in self.table.columns:
            from moesim.config import ConfigError

            raise ConfigError("the table has no 'hardware' column; expected a results table "
                              "from moesim run or moesim compare", field="hardware")
        self.table = self.table.reset_index(drop=True)
        self.profiles = list(dict.fromkeys(self.table["hardware"].astype(str)))
        self.axes = infer_axes(self.table, self.meta)

    def lead_axes(self) -> list[str]:
        """Axes with zip partners folded into the first of their group."""
        kept: list[str] = []
        for axis in self.axes:
            if not any(self.linked(k, axis) for k in kept):
                kept.append(axis)
        return kept

    def axis_title(self, axis: str) -> str:
        """``axis``, naming the fields that vary with it (a zip group)."""
        partners = [a for a in self.axes if a != axis and self.linked(a, axis)]
        return f"{axis} (with {', '.join(partners)})" if partners else axis

    @property
    def title(self) -> str:
        return str(self.scenario.get("name") or "moesim results")

    @property
    def scenario(self) -> dict:
        return self.meta.get("scenario", {})

    def label(self, hardware: str) -> str:
        """Display name of a profile: its ``name`` from metadata, or the file stem."""
        info = self.meta.get("profiles", {}).get(str(hardware), {})
        return str(info.get("name") or Path(str(hardware)).stem)

    def color(self, hardware: str) -> str:
        return PALETTE[self.profiles.index(str(hardware)) % len(PALETTE)]

    def kind(self, hardware: str) -> str:
        """'datasheet' or 'calibrated' from metadata, else from the profile, else 'unknown'."""
        info = self.meta.get("profiles", {}).get(str(hardware), {})
        if "kind" in info:
            return str(info["kind"])
        profile = load_profile_or_none(hardware)
        return profile.kind if profile is not None else "unknown"

    def has(self, *columns: str) -> bool:
        return all(c in self.table.columns and self.table[c].notna().any() for c in columns)

    def linked(self, a: str, b: str) -> bool:
        """True when ``a`` and ``b`` vary together (a zip group), not as a grid."""
        for group in self.scenario.get("zip_groups", []):
            if a in group and b in group:
                return True
        pairs = self.table[[a, b]].drop_duplicates()
        return len(pairs) <= max(self.table[a].nunique(), self.table[b].nunique())


def infer_axes(table: pd.DataFrame, meta: dict) -> list[str]:
    """Swept input columns: from metadata when present, else columns that vary within a profile."""
    listed = meta.get("scenario", {}).get("swept_fields")
    candidates = listed if listed else [c for c in INPUT_COLUMNS if c in table.columns]
    axes = []
    for col in candidates:
        if col not in table.columns or table[col].nunique(dropna=False) < 2:
            continue
        if table.groupby("hardware")[col].nunique(dropna=False).max() < 2:
            continue  # a per-profile override, not an axis
        axes.append(col)
    return axes


def load_profile_or_none(hardware):
    from moesim.config import ConfigError, load_profile

    try:
        return load_profile(str(hardware))
    except (ConfigError, OSError):
        return None


def is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def axis_values(series: pd.Series, limit: int = 60) -> list:
    """Distinct values of an axis (numbers sorted, labels in table order), thinned evenly to at
    most ``limit``."""
    values = list(pd.unique(series.dropna()))
    if is_numeric(series):
        values = sorted(values, key=_sort_key)
    if len(values) <= limit:
        return values
    idx = np.unique(np.linspace(0, len(values) - 1, limit).round().astype(int))
    return [values[i] for i in idx]


def _sort_key(value):
    if isinstance(value, (int, float, np.number)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def log_scale(values) -> bool:
    """Use a log axis for positive numbers spanning 16x or more."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return arr.size > 2 and arr.min() > 0 and arr.max() / arr.min() >= 16


def sample(df: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows, chosen reproducibly."""
    return df if len(df) <= n else df.sample(n=n, random_state=seed).sort_index()


def evenly(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most ``n`` rows, evenly spaced through the table (every profile keeps rows)."""
    if len(df) <= n:
        return df
    idx = np.unique(np.linspace(0, len(df) - 1, n).round().astype(int))
    return df.iloc[idx]


def gemm_dtype(df: pd.DataFrame) -> pd.Series:
    """The GEMM dtype per row: ``compute_dtype`` where set, else what ``weight_dtype`` implies
    (:func:`moesim.config.dtypes.compute_dtype`)."""
    from moesim.config.dtypes import compute_dtype

    def col(name):
        return df[name] if name in df.columns else pd.Series(None, df.index, dtype=object)

    weight = col("weight_dtype").fillna("bf16")
    act = col("activation_dtype").fillna("bf16")
    return pd.Series([compute_dtype(w, c, a) for w, c, a in zip(weight, col("compute_dtype"), act)],
                     index=df.index, dtype=str)
