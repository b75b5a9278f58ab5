"""Performance figures: throughput against each swept axis, per-phase latency, hardware.

Each builder takes a ``ReportData`` and returns a plotly figure, or None when the table has
nothing for it. 100k-row tables are aggregated (median, min, max) before plotting.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moesim.core.layer import PHASES
from moesim.reports.data import MS, PHASE_COLORS, ReportData, axis_values, is_numeric, log_scale

TEMPLATE = "plotly_white"
ROW_HEIGHT = 340


def grid(n: int, cols: int, titles) -> tuple[go.Figure, int]:
    """A subplot grid for ``n`` panels, ``cols`` wide; returns the figure and its column count."""
    cols = max(1, min(n, cols))
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[str(t) for t in titles],
                        horizontal_spacing=0.08, vertical_spacing=min(0.3, 0.45 / rows))
    fig.update_layout(template=TEMPLATE, height=ROW_HEIGHT * rows + 80,
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig, cols


def x_of(values, numeric: bool) -> list:
    """Plot coordinates of axis values: numbers stay numbers, the rest become labels."""
    return list(values) if numeric else [str(v) for v in values]


def style_x(fig: go.Figure, title: str, values, numeric: bool, **pos) -> None:
    """Log axis for wide numeric ranges; ticks at the swept values when there are few."""
    kind = ("log" if log_scale(values) else "linear") if numeric else "category"
    ticks = {}
    if numeric and len(values) <= 12:
        ticks = dict(tickvals=list(values), ticktext=[f"{v:g}" for v in values])
    fig.update_xaxes(title_text=title, type=kind, **ticks, **pos)


def throughput(data: ReportData) -> go.Figure | None:
    """Median tokens/s against each swept axis (other axes: median, hover shows min-max)."""
    axes = data.lead_axes()[:8]
    if not axes or not data.has("tokens_per_s"):
        return None
    fig, cols = grid(len(axes), 2, [f"tokens/s vs {data.axis_title(a)}" for a in axes])
    spread = []
    for i, axis in enumerate(axes):
        pos = dict(row=i // cols + 1, col=i % cols + 1)
        numeric = is_numeric(data.table[axis])
        values = axis_values(data.table[axis])
        for hw, sub in data.table.groupby("hardware", sort=False):
            stats = sub.groupby(axis)["tokens_per_s"].agg(["median", "min", "max"])
            stats = stats.reindex([v for v in values if v in stats.index])
            spread += [stats["min"].min(), stats["max"].max()]
            fig.add_trace(go.Scatter(
                x=x_of(stats.index, numeric), y=stats["median"], mode="lines+markers",
                name=data.label(hw), legendgroup=str(hw), showlegend=i == 0,
                line=dict(color=data.color(hw)), customdata=stats[["min", "max"]].to_numpy(),
                hovertemplate=f"{axis}=%{{x}}<br>median %{{y:.4s}} tokens/s"
                              "<br>min %{customdata[0]:.4s}, max %{customdata[1]:.4s}"), **pos)
        style_x(fig, data.axis_title(axis), values, numeric, **pos)
    fig.update_yaxes(title_text="tokens/s", type="log" if log_scale(spread) else "linear")
    return fig


def phases(data: ReportData) -> go.Figure | None:
    """Stacked median per-phase latency (ms) along the first swept axis, one panel per profile."""
    present = [p for p in PHASES if data.has(f"{p}_s") and (data.table[f"{p}_s"] > 0).any()]
    if not present:
        return None
    axis = data.axes[0] if data.axes else None
    if axis is None:
        return _phases_by_profile(data, present)
    values = axis_values(data.table[axis], limit=24)
    column, panels = _panels(data, axis)
    fig, cols = grid(len(panels), 3, [title for _, title in panels])
    stacks: dict[str, list] = {"ms": [], "%": [], "totals": []}
    for i, (key, _) in enumerate(panels):
        sub = data.table[data.table[column] == key]
        med = sub.groupby(axis)[[f"{p}_s" for p in present]].median()
        med = med.reindex([v for v in values if v in med.index]) / MS
        share = 100.0 * med.div(med.sum(axis=1), axis=0)
        stacks["totals"] += med.sum(axis=1).tolist()
        for p in present:
            stacks["ms"].append(med[f"{p}_s"].tolist())
            stacks["%"].append(share[f"{p}_s"].tolist())
            fig.add_trace(go.Bar(
                x=[str(v) for v in med.index], y=med[f"{p}_s"], name=p, legendgroup=p,
                showlegend=i == 0, marker_color=PHASE_COLORS[p], customdata=med[f"{p}_s"],
                hovertemplate=f"{p}: %{{customdata:.3f}} ms<extra>{axis}=%{{x}}</extra>"),
                row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text=data.axis_title(axis), type="category")
    fig.update_yaxes(matches="y")  # one scale: profiles compare by height
    fig.update_layout(barmode="stack")
    _unit_buttons(fig, stacks)
    return fig


def _panels(data: ReportData, axis: str) -> tuple[str, list[tuple]]:
    """One panel per profile; with a single profile, one per value of another swept axis."""
    others = [a for a in data.lead_axes() if a != axis and not data.linked(a, axis)]
    if len(data.profiles) == 1 and others and data.table[others[0]].nunique() <= 9:
        values = axis_values(data.table[others[0]])
        return others[0], [(v, f"{others[0]}={v}") for v in values]
    return "hardware", [(hw, data.label(hw)) for hw in data.profiles]


def _unit_buttons(fig: go.Figure, stacks: dict) -> None:
    """Buttons switching the stacks between ms and % of the stack; % first when the stack
    totals span 20x or more (absolute bars would hide the small ones)."""
    yaxes = [k for k in fig.to_plotly_json()["layout"] if k.startswith("yaxis")]
    titles = {"ms": "ms", "%": "% of the phases' sum"}
    buttons = [dict(label=label, method="update",
                    args=[{"y": stacks[unit]}, {f"{ax}.title.text": titles[unit] for ax in yaxes}])
               for unit, label in (("ms", "ms"), ("%", "% of phases"))]
    totals = np.asarray(stacks["totals"], dtype=float)
    start = 1 if totals.size and totals.min() > 0 and totals.max() / totals.min() >= 20 else 0
    fig.update_layout(updatemenus=[dict(type="buttons", direction="right", active=start,
                                        x=0.0, xanchor="left", y=1.0, yanchor="bottom",
                                        pad=dict(b=28), buttons=buttons)])
    unit = ("ms", "%")[start]
    for trace, ys in zip(fig.data, stacks[unit]):
        trace.y = ys
    fig.update_yaxes(title_text=titles[unit])


def _phases_by_profile(data: ReportData, present: list[str]) -> go.Figure:
    med = data.table.groupby("hardware", sort=False)[[f"{p}_s" for p in present]].median() / MS
    fig = go.Figure(layout=dict(template=TEMPLATE, barmode="stack", height=420,
                                yaxis_title="ms", xaxis_title="profile"))
    for p in present:
        fig.add_trace(go.Bar(x=[data.label(h) for h in med.index], y=med[f"{p}_s"], name=p,
                             marker_color=PHASE_COLORS[p],
                             hovertemplate=f"{p}: %{{y:.3f}} ms<extra>%{{x}}</extra>"))
    return fig


def hardware(data: ReportData) -> go.Figure | None:
    """Per profile: tokens/s over all configs and speed-up over the first profile, as boxes."""
    if len(data.profiles) < 2 or not data.has("time_s", "tokens_per_s"):
        return None
    first = data.profiles[0]
    keys = data.axes or None
    by_hw = {hw: sub for hw, sub in data.table.groupby(data.table["hardware"].astype(str))}
    base = _times(by_hw[first], keys)
    fig, _ = grid(2, 2, ["tokens/s over all configs", f"speed-up over {data.label(first)} "
                                                       "(same config: time ratio)"])
    spread = []
    for hw in data.profiles:
        sub = by_hw[hw]
        fits = 100.0 * sub["moe_fits_in_memory"].mean() if "moe_fits_in_memory" in sub else np.nan
        name = f"{data.label(hw)}<br>MoE layers fit: {fits:.0f}%"
        ratio = base / _times(sub, keys)
        spread += [sub["tokens_per_s"].min(), sub["tokens_per_s"].max()]
        for col, values in ((1, sub["tokens_per_s"]), (2, pd.Series(ratio).dropna())):
            fig.add_trace(_box(name, values, data.color(hw)) if len(values) > 1 else
                          go.Bar(x=[name], y=list(values), marker_color=data.color(hw), name=name),
                          row=1, col=col)
    fig.update_yaxes(title_text="tokens/s", type="log" if log_scale(spread) else "linear",
                     row=1, col=1)
    fig.update_yaxes(title_text="x", row=1, col=2)
    fig.update_layout(showlegend=False)
    return fig


def _box(name: str, values: pd.Series, color: str) -> go.Box:
    """A box from precomputed quartiles (whiskers: min and max), so 1e5 rows stay small."""
    q = values.quantile([0.0, 0.25, 0.5, 0.75, 1.0]).to_numpy()
    return go.Box(x=[name], q1=[q[1]], median=[q[2]], q3=[q[3]], lowerfence=[q[0]],
                  upperfence=[q[4]], name=name, marker_color=color, line=dict(color=color),
                  boxpoints=False)


def _times(sub, keys):
    if keys is None:
        return sub["time_s"].median()
    return sub.groupby(keys)["time_s"].median()
