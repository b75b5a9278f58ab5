"""Whole-model report figures: serving curve, memory stack per device, time per layer kind.

Each builder takes the ``predict_model_many`` table and returns a plotly figure or None.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from moesim.core.step import KINDS

TEMPLATE = "plotly_white"
MEMORY_PARTS = {"weights_bytes_per_device": "weights", "kv_cache_bytes_per_device": "KV cache",
                "workspace_bytes_per_device": "workspace"}


def _label(df: pd.DataFrame) -> pd.Series:
    """One curve per hardware profile and layout (tp x dp_attn x pp) and other swept fields."""
    parts = [df["hardware"].astype(str)]
    layout = "tp" + df["tp"].astype(int).astype(str) + " dp" + df["dp_attn"].astype(int).astype(
        str) + " pp" + df["pp"].astype(int).astype(str)
    parts.append(layout)
    for col in ("overlap", "kv_dtype", "context"):
        if col in df.columns and df[col].nunique(dropna=False) > 1:
            parts.append(col + " " + df[col].astype(str))
    return pd.concat(parts, axis=1).agg(" | ".join, axis=1)


def serving_curve(df: pd.DataFrame) -> go.Figure | None:
    """Decode tokens/s per device against TPOT as the batch grows; configs whose memory does
    not fit are left out, so each curve stops where the KV cache runs out."""
    dec = df[(df["phase"] == "decode") & (df["fits_in_memory"] > 0)]
    if dec.empty:
        return None
    fig = go.Figure()
    for label, g in dec.assign(label=_label(dec)).groupby("label", sort=True):
        g = g.sort_values("batch")
        fig.add_trace(go.Scatter(x=g["tpot_s"] * 1e3, y=g["tokens_per_s_per_device"],
                                 mode="lines+markers", name=label, text=g["batch"],
                                 hovertemplate="batch %{text}<br>TPOT %{x:.2f} ms<br>"
                                               "%{y:.0f} tokens/s/device<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=520, xaxis_title="TPOT (ms per token)",
                      yaxis_title="decode tokens/s per device", legend_font_size=10)
    fig.update_xaxes(type="log")
    return fig


def memory_stack(df: pd.DataFrame) -> go.Figure | None:
    """Memory per device at the largest batch of each profile and layout, stacked by part,
    with the usable capacity marked."""
    if not len(df):
        return None
    last = df.assign(label=_label(df)).sort_values("batch").groupby("label").tail(1)
    fig = go.Figure()
    for col, name in MEMORY_PARTS.items():
        fig.add_trace(go.Bar(x=last["label"], y=last[col] / 1e9, name=name))
    fig.add_trace(go.Scatter(x=last["label"], y=last["memory_capacity_bytes"] / 1e9,
                             mode="markers", marker_symbol="line-ew-open", marker_size=30,
                             name="usable capacity"))
    fig.update_layout(template=TEMPLATE, barmode="stack", height=520, yaxis_title="GB per device",
                      xaxis_title="profile | layout (largest batch)", legend_font_size=10)
    return fig


def time_by_kind(df: pd.DataFrame) -> go.Figure | None:
    """Share of the step in each layer kind at the largest batch that fits."""
    ok = df[df["fits_in_memory"] > 0]
    if ok.empty:
        return None
    last = ok.assign(label=_label(ok)).sort_values("batch").groupby("label").tail(1)
    fig = go.Figure()
    for kind in (*KINDS, "pp_bubble"):
        values = last[f"{kind}_s"] * 1e3
        if (values > 0).any():
            fig.add_trace(go.Bar(x=last["label"], y=values, name=kind))
    fig.update_layout(template=TEMPLATE, barmode="stack", height=520, yaxis_title="ms per step",
                      xaxis_title="profile | layout (largest batch that fits)",
                      legend_font_size=10)
    return fig


FIGURES = {
    "serving_curve": ("Serving curve: throughput against per-token latency", serving_curve),
    "memory_stack": ("Memory per device", memory_stack),
    "time_by_kind": ("Time per layer kind", time_by_kind),
}
