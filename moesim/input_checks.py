"""Checks of predict_many's input columns, vectorised: a Python loop runs over the distinct
values of a string column or a few values of a numeric one, never over rows."""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.config import ConfigError
from moesim.config.limits import MAX_PREDICT_CELLS
from moesim.config.run import RUN_FIELDS, validate_run


def check_run_values(df: pd.DataFrame, fields=RUN_FIELDS) -> None:
    """Every run column in ``fields`` is valid, checked a column at a time without a Python loop
    over rows: RunConfig's checks are per field and interval-shaped, so a numeric column is valid
    when its minimum, maximum and any NaN or non-integral value are; other columns by distinct
    value."""
    for col in fields:
        column = df[col]
        for i in representatives(column, integral=col != "capacity_factor"):
            value = column.iloc[i]
            validate_run({"tokens": 1, col: value.item() if hasattr(value, "item") else value})


def representatives(column: pd.Series, integral: bool) -> list[int]:
    """Positions of the values of ``column`` whose validity implies that of all the others."""
    if len(column) == 0:
        return []
    if isinstance(column.dtype, pd.StringDtype):  # one per distinct string, without unboxing
        return np.flatnonzero(~column.duplicated().to_numpy()).tolist()
    values = column.to_numpy()
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
    slots of ``replicated:R`` (R = ep when omitted or not a number) and ep."""
    ep = np.asarray(df["ep"], dtype=float) if "ep" in df.columns else np.ones(len(df))
    if "placement" not in df.columns:
        return np.asarray(experts, dtype=float) + ep
    codes, specs = pd.factorize(df["placement"].astype(str), use_na_sentinel=False)
    redundant = np.array([_redundant_slots(spec) for spec in specs], dtype=float)[codes]
    return np.asarray(experts, dtype=float) + np.where(np.isnan(redundant), ep, redundant) + ep


def _redundant_slots(spec: str) -> float:
    """Redundant slots of one placement spec: R of ``replicated:R``, NaN for ``replicated``
    without a number (then ep), 0 for the others."""
    if not spec.startswith("replicated"):
        return 0.0
    return float(pd.to_numeric(spec.partition(":")[2] or None, errors="coerce"))


def check_size(df: pd.DataFrame, columns: dict) -> None:
    """Refuse a call whose [rows, expert slots] arrays would not fit (limits.MAX_PREDICT_CELLS)."""
    cells = float(row_cells(df, columns["experts"]).sum())
    if cells > MAX_PREDICT_CELLS:
        per_row = cells / len(df)
        raise ConfigError(f"{len(df):,} rows x {per_row:,.0f} expert slots need about "
                          f"{cells * 50 / 1e9:.1f} GB (limits.MAX_PREDICT_CELLS = "
                          f"{MAX_PREDICT_CELLS:,} cells); split the frame into chunks of at most "
                          f"{int(MAX_PREDICT_CELLS // per_row):,} rows", field="experts")
