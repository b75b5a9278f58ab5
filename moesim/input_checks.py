"""Checks of predict_many's input columns, vectorised: a Python loop runs over the distinct
values of a string column or a few values of a numeric one, never over rows."""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.config import ConfigError
from moesim.config.limits import MAX_PREDICT_CELLS
from moesim.config.run import RUN_FIELDS, validate_run


def check_run_values(df: pd.DataFrame) -> None:
    """Every run column is valid, checked a column at a time without a Python loop over rows:
    RunConfig's checks are per field and interval-shaped, so a numeric column is valid when its
    minimum, maximum and any NaN or non-integral value are; other columns by distinct value."""
    for col in RUN_FIELDS:
        values = df[col].to_numpy()
        for i in representatives(df[col], integral=col != "capacity_factor"):
            value = values[i]
            validate_run({"tokens": 1, col: value.item() if hasattr(value, "item") else value})


def representatives(column: pd.Series, integral: bool) -> list[int]:
    """Positions of the values of ``column`` whose validity implies that of all the others."""
    values = column.to_numpy()
    if len(values) == 0:
        return []
    if values.dtype.kind in "iu":
        return [int(values.argmin()), int(values.argmax())]
    if values.dtype.kind != "f" and pd.api.types.infer_dtype(values, skipna=False) == "string":
        return pd.Series(values).drop_duplicates().index.tolist()  # one per distinct string
    if values.dtype.kind != "f":  # bools, mixed objects, nullable columns
        try:  # by type too: True == 1 would hide a bool among integers
            first = {}
            for i, v in enumerate(values):
                first.setdefault((type(v), v), i)
            return list(first.values())
        except TypeError:  # unhashable cells (lists): each is an error, the first will do
            return [0]
    bad = ~np.isfinite(values)
    if integral:
        bad |= values != np.round(values)
    finite = np.where(np.isfinite(values), values, np.nan)
    picks = [int(np.nanargmin(finite)), int(np.nanargmax(finite))] \
        if np.isfinite(values).any() else []
    return picks + [int(i) for i in np.flatnonzero(bad)[:1]]


def row_cells(df: pd.DataFrame, experts) -> np.ndarray:
    """Per row, the width of its [rows, expert slots + devices] arrays: experts, the redundant
    slots of ``replicated:R`` (R = ep when omitted) and ep."""
    ep = np.asarray(df["ep"], dtype=float) if "ep" in df.columns else np.ones(len(df))
    place = df["placement"].astype(str) if "placement" in df.columns else \
        pd.Series("contiguous", index=df.index)
    arg = place.str.partition(":")[2]
    redundant = np.where(place.str.startswith("replicated"),
                         pd.to_numeric(arg.where(arg != ""), errors="coerce").fillna(
                             pd.Series(ep, index=df.index)), 0.0)
    return np.asarray(experts, dtype=float) + redundant + ep


def check_size(df: pd.DataFrame, columns: dict) -> None:
    """Refuse a call whose [rows, expert slots] arrays would not fit (limits.MAX_PREDICT_CELLS)."""
    cells = float(row_cells(df, columns["experts"]).sum())
    if cells > MAX_PREDICT_CELLS:
        per_row = cells / len(df)
        raise ConfigError(f"{len(df):,} rows x {per_row:,.0f} expert slots need about "
                          f"{cells * 50 / 1e9:.1f} GB (limits.MAX_PREDICT_CELLS = "
                          f"{MAX_PREDICT_CELLS:,} cells); split the frame into chunks of at most "
                          f"{int(MAX_PREDICT_CELLS // per_row):,} rows", field="experts")
