"""Prediction against measurement, drawn only when the table has ``measured_time_s``.

Optional columns: ``measured_<phase>_s`` per phase, ``predicted_band_low_s`` and
``predicted_band_high_s`` (the prediction's uncertainty band, drawn as error bars).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from moesim.core.layer import PHASES
from moesim.reports.data import MS, ReportData, log_scale, sample
from moesim.reports.figures import TEMPLATE

#: Dotted guide lines at y = (1 +/- GUIDE) x: a visual reference, not an accuracy target.
GUIDE = 0.2
POINTS = 3000


def _measured_rows(data: ReportData) -> pd.DataFrame | None:
    if not data.has("time_s", "measured_time_s"):
        return None
    rows = data.table[(data.table["measured_time_s"] > 0) & data.table["time_s"].notna()]
    return rows if not rows.empty else None


def predicted_vs_measured(data: ReportData) -> go.Figure | None:
    """Predicted (y) against measured (x) layer time in ms, with the y = x line."""
    rows = _measured_rows(data)
    if rows is None:
        return None
    rows = sample(rows, POINTS)
    band = data.has("predicted_band_low_s", "predicted_band_high_s")
    fig = go.Figure()
    for hw, sub in rows.groupby("hardware", sort=False):
        pred, meas = sub["time_s"] / MS, sub["measured_time_s"] / MS
        error = None
        if band:
            high, low = sub["predicted_band_high_s"] / MS, sub["predicted_band_low_s"] / MS
            error = dict(type="data", array=(high - pred).clip(lower=0),
                         arrayminus=(pred - low).clip(lower=0), thickness=1)
        fig.add_trace(go.Scatter(x=meas, y=pred, mode="markers", name=data.label(hw),
                                 marker=dict(color=data.color(hw), size=7), error_y=error,
                                 hovertemplate="measured %{x:.4g} ms<br>predicted %{y:.4g} ms"
                                               "<extra></extra>"))
    values = pd.concat([rows["time_s"], rows["measured_time_s"]]) / MS
    lo, hi = float(values.min()) / 1.2, float(values.max()) * 1.2
    line = np.geomspace(lo, hi, 32) if lo > 0 else np.linspace(0.0, hi, 32)
    fig.add_trace(go.Scatter(x=line, y=line, mode="lines", name="y = x",
                             line=dict(color="black")))
    for sign in (1, -1):
        fig.add_trace(go.Scatter(x=line, y=line * (1 + sign * GUIDE), mode="lines",
                                 name=f"±{GUIDE:.0%}", showlegend=sign == 1, legendgroup="guide",
                                 line=dict(color="gray", dash="dot")))
    kind = "log" if log_scale(values) else "linear"
    span = [np.log10(lo), np.log10(hi)] if kind == "log" else [0.0, hi]  # same range: y = x
    fig.update_layout(template=TEMPLATE, height=520,
                      xaxis=dict(title="measured layer time (ms)", type=kind, range=span),
                      yaxis=dict(title="predicted layer time (ms)", type=kind, range=span))
    return fig


def phase_error(data: ReportData) -> go.Figure | None:
    """Relative error (predicted - measured) / measured in % per phase, one box per profile."""
    rows = _measured_rows(data)
    if rows is None:
        return None
    pairs = [("layer", "time_s", "measured_time_s")] + [
        (p, f"{p}_s", f"measured_{p}_s") for p in PHASES if data.has(f"{p}_s", f"measured_{p}_s")]
    if len(pairs) < 2:
        return None
    fig = go.Figure()
    for hw, sub in rows.groupby("hardware", sort=False):
        names, errors = [], []
        for name, pred, meas in pairs:
            ok = sub[sub[meas] > 0]
            names += [name] * len(ok)
            errors += list(100.0 * (ok[pred] - ok[meas]) / ok[meas])
        fig.add_trace(go.Box(x=names, y=errors, name=data.label(hw), marker_color=data.color(hw),
                             boxpoints=False))
    fig.add_hline(y=0, line=dict(color="black", width=1))
    fig.update_layout(template=TEMPLATE, height=420, boxmode="group",
                      yaxis_title="error (%): (predicted - measured) / measured",
                      xaxis_title="phase")
    return fig
