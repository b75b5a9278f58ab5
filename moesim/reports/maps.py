"""Where the time goes and what fits: bottleneck map, memory against capacity, roofline."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from moesim.reports.data import (
    GB,
    PALETTE,
    TFLOPS,
    ReportData,
    axis_values,
    gemm_dtype,
    is_numeric,
    load_profile_or_none,
    sample,
)
from moesim.reports.figures import TEMPLATE, grid, style_x, x_of

#: Points per profile on the roofline (a reproducible sample of the table).
ROOFLINE_POINTS = 1500
PREFERRED_MAP_AXES = ("experts", "top_k", "tokens", "ep", "expert_ffn")


def map_axes(data: ReportData) -> tuple[str, str | None] | None:
    """Two independent (not zipped) axes for the map, preferring experts x top_k."""
    ordered = sorted(data.axes, key=lambda a: (PREFERRED_MAP_AXES.index(a)
                                               if a in PREFERRED_MAP_AXES else 99))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if not data.linked(a, b):
                return a, b
    return (data.axes[0], None) if data.axes else None


def bottleneck(data: ReportData) -> go.Figure | None:
    """Most common bottleneck (phase:resource) per cell of two swept axes, per profile."""
    pair = map_axes(data) if data.has("bottleneck") else None
    if pair is None:
        return None
    x, y = pair
    table = data.table.assign(_profile=data.table["hardware"].map(data.label))
    y_col = y or "_profile"
    cats = sorted(table["bottleneck"].astype(str).unique())
    code = {c: i for i, c in enumerate(cats)}
    panels = data.profiles if y else [None]
    fig, cols = grid(len(panels), 2, [data.label(p) for p in panels] if y else [""])
    xs = axis_values(table[x])
    ys = axis_values(table[y]) if y else [data.label(p) for p in data.profiles]
    table["_code"] = table["bottleneck"].astype(str).map(code)  # pivot numbers, not strings
    for i, hw in enumerate(panels):
        sub = table if hw is None else table[table["hardware"] == hw]
        cell = (sub.groupby([y_col, x, "_code"]).size().rename("n").reset_index()
                .sort_values("n", kind="stable").drop_duplicates([y_col, x], keep="last"))
        z = cell.pivot(index=y_col, columns=x, values="_code")
        z = z.reindex(index=ys, columns=xs).to_numpy(dtype=float)
        names = np.array(cats, dtype=object)[np.nan_to_num(z).astype(int)]
        fig.add_trace(go.Heatmap(
            x=[str(v) for v in xs], y=[str(v) for v in ys], z=z,
            text=np.where(np.isnan(z), None, names),
            zmin=-0.5, zmax=len(cats) - 0.5, colorscale=_discrete(len(cats)), showscale=i == 0,
            colorbar=dict(tickvals=list(range(len(cats))), ticktext=cats, title="bottleneck",
                          len=min(1.0, 700 / (fig.layout.height or 700)), y=1, yanchor="top"),
            hovertemplate=f"{x}=%{{x}}, {y or 'profile'}=%{{y}}<br>%{{text}}<extra></extra>"),
            row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text=x, type="category")
    fig.update_yaxes(title_text=y or "profile", type="category")
    return fig


def _discrete(n: int) -> list:
    scale = []
    for i in range(n):
        color = PALETTE[i % len(PALETTE)]
        scale += [[i / n, color], [(i + 1) / n, color]]
    return scale


def memory(data: ReportData) -> go.Figure | None:
    """MoE-layer memory per device (the MoE layers' weights and one layer's buffers; attention,
    dense layers and KV cache not counted) as a share of each profile's capacity (max over the
    other axes)."""
    if not data.has("moe_memory_bytes_per_device", "memory_capacity_bytes"):
        return None
    axis = _memory_axis(data)
    fig = go.Figure(layout=dict(template=TEMPLATE, height=440, xaxis_title=axis or "profile",
                                yaxis_title="MoE layers, % of device memory"))
    table = data.table.assign(_all="all configs")
    x_col = axis or "_all"
    numeric = axis is not None and is_numeric(table[axis])
    values = axis_values(table[x_col])
    for hw, sub in table.groupby("hardware", sort=False):
        peak = sub.groupby(x_col)["moe_memory_bytes_per_device"].max()
        peak = peak.reindex([v for v in values if v in peak.index])
        cap = sub["memory_capacity_bytes"].max()
        x = x_of(peak.index, numeric)
        fig.add_trace(go.Scatter(
            x=x if axis else [data.label(hw)], y=100.0 * peak / cap, name=data.label(hw),
            mode="lines+markers" if axis else "markers", marker=dict(size=10),
            line=dict(color=data.color(hw)),
            customdata=np.c_[peak / GB, np.full(len(peak), cap / GB)],
            hovertemplate="%{customdata[0]:.1f} GB of %{customdata[1]:.0f} GB<extra></extra>"))
    fig.add_hline(y=100, line=dict(color="black", dash="dash"), annotation_text="capacity",
                  annotation_position="top left")
    if axis:
        style_x(fig, axis, values, numeric)
    return fig


def _memory_axis(data: ReportData) -> str | None:
    """The swept axis along which memory per device varies most (None: it barely varies)."""
    best, best_spread = None, 1.01
    for axis in data.axes:
        med = data.table.groupby(axis)["moe_memory_bytes_per_device"].median()
        spread = med.max() / max(med.min(), 1.0)
        if spread > best_spread:
            best, best_spread = axis, spread
    return best


def roofline(data: ReportData) -> go.Figure | None:
    """Configs on each profile's roofline: FLOP/byte of HBM traffic vs achieved FLOP/s."""
    if not data.has("flops", "hbm_bytes", "time_s"):
        return None
    fig = go.Figure(layout=dict(
        template=TEMPLATE, height=480,
        xaxis=dict(type="log", title="arithmetic intensity (FLOP / HBM byte)"),
        yaxis=dict(type="log", title="achieved TFLOP/s (flops / layer time)")))
    dtypes = gemm_dtype(data.table) if "weight_dtype" in data.table.columns else None
    for hw, sub in data.table.groupby("hardware", sort=False):
        sub = sample(sub[(sub["flops"] > 0) & (sub["hbm_bytes"] > 0)], ROOFLINE_POINTS)
        if sub.empty:
            continue
        intensity = sub["flops"] / sub["hbm_bytes"]
        achieved = sub["flops"] / sub["time_s"] / TFLOPS
        color, name = data.color(hw), data.label(hw)
        hover = _hover_text(sub, data.axes[:4])
        fig.add_trace(go.Scatter(x=intensity, y=achieved, mode="markers", name=name,
                                 legendgroup=hw, marker=dict(color=color, size=6, opacity=0.6),
                                 text=hover, hovertemplate="%{text}<br>%{x:.3g} FLOP/B, "
                                                           "%{y:.3g} TFLOP/s<extra></extra>"))
        dtype = dtypes[sub.index].mode().iat[0] if dtypes is not None else None
        roof = _roof(hw, dtype, intensity)
        if roof is not None:
            fig.add_trace(go.Scatter(x=roof[0], y=roof[1], mode="lines", legendgroup=hw,
                                     name=f"{name} roof ({dtype})", showlegend=False,
                                     line=dict(color=color, dash="dash")))
    return fig


def _roof(hw: str, dtype: str | None, intensity: pd.Series):
    profile = load_profile_or_none(hw)
    if profile is None or dtype not in profile.compute.peak_flops_per_s:
        return None
    peak = profile.compute.peak_flops_per_s[dtype]
    bandwidth = profile.memory.bandwidth_bytes_per_s
    ridge = peak / bandwidth
    lo = min(intensity.min(), ridge) / 2
    hi = max(intensity.max(), ridge) * 2
    xs = np.geomspace(lo, hi, 64)
    return xs, np.minimum(peak, bandwidth * xs) / TFLOPS


def _hover_text(sub: pd.DataFrame, axes: list[str]) -> list[str]:
    if not axes:
        return [""] * len(sub)
    parts = [sub[a].astype(str).radd(f"{a}=") for a in axes]
    text = parts[0]
    for part in parts[1:]:
        text = text + ", " + part
    return text.tolist()

