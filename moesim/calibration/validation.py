"""Measured MoE layers re-predicted with today's model and profiles: errors and signed bias.

A committed measurement table (``results/<set>/results.csv`` from ``moesim measure``) holds the
measured columns and the predictions of the commit that measured it. The predictions go stale
when the model or a profile changes, so every accuracy number is computed here from a fresh
prediction of the same rows (``predict_many`` on the table's model, hardware and run columns);
the stored prediction columns are only compared with it (``stale_rows``).

Errors are ``(predicted - measured) / measured`` per row, for the layer time and each phase
(a phase counts where it was measured, > 0); ``bias`` is their mean (signed), per EP size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moesim.config.model import MODEL_FIELDS
from moesim.config.run import RUN_FIELDS
from moesim.core.layer import PHASES

RESULTS = Path(__file__).resolve().parents[2] / "results"
PREDICTED = ("time_s",) + tuple(f"{p}_s" for p in PHASES)


def load_set(name_or_path: str | Path) -> pd.DataFrame:
    """A measured table by set name (``results/<name>/results.csv``) or path."""
    path = Path(name_or_path)
    if path.suffix != ".csv":
        path = RESULTS / str(name_or_path) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no measured table at {path}")
    return pd.read_csv(path)


def repredict(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its prediction columns replaced by today's (the stored ones kept as
    ``stored_<col>``) and ``rel_error_time`` / ``rel_error_<phase>`` recomputed."""
    from moesim.predict import predict_many

    inputs = list(dict.fromkeys(c for c in ("model", "hardware", *MODEL_FIELDS, *RUN_FIELDS)
                                if c in table))
    fresh = predict_many(table[inputs].copy())
    out = table.copy()
    for col in PREDICTED:
        if col in fresh and col in out:
            out[f"stored_{col}"] = out[col]
            out[col] = fresh[col].to_numpy()
    return relative_errors(out)


def relative_errors(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["rel_error_time"] = out["time_s"] / out["measured_time_s"] - 1.0
    for phase in PHASES:
        pred, meas = f"{phase}_s", f"measured_{phase}_s"
        if pred in out and meas in out:
            measured = out[meas].where(out[meas] > 0)
            out[f"rel_error_{phase}"] = out[pred] / measured - 1.0
    return out


def _per_ep(table: pd.DataFrame, how) -> pd.DataFrame:
    cols = ["rel_error_time"] + [f"rel_error_{p}" for p in PHASES
                                 if f"rel_error_{p}" in table and table[f"rel_error_{p}"].notna().any()]
    groups = [("all", table)] + [(f"ep={ep}", sub) for ep, sub in table.groupby("ep")]
    rows = {name: {c.removeprefix("rel_error_"): 100 * how(sub[c].dropna()) if sub[c].notna().any()
                   else np.nan for c in cols} | {"rows": len(sub)} for name, sub in groups}
    return pd.DataFrame(rows).T


def mape(table: pd.DataFrame) -> pd.DataFrame:
    """Mean |error| (%) of the layer time and each phase, over all rows and per EP size."""
    return _per_ep(table, lambda e: float(np.mean(np.abs(e))))


def bias(table: pd.DataFrame) -> pd.DataFrame:
    """Mean signed error (%) per phase and EP size: > 0 over-predicts, < 0 under-predicts."""
    return _per_ep(table, lambda e: float(np.mean(e)))


def stale_rows(table: pd.DataFrame, rtol: float = 1e-9) -> int:
    """Rows whose stored layer-time prediction differs from today's (after :func:`repredict`)."""
    if "stored_time_s" not in table:
        return 0
    return int((~np.isclose(table["stored_time_s"], table["time_s"], rtol=rtol)).sum())
