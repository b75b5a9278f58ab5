"""HTML tables under the figures, in human units; every cell is escaped."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

from moesim.core.layer import PHASES
from moesim.reports.data import GB, MS, ReportData, evenly


def fmt_ms(seconds) -> str:
    return "" if pd.isna(seconds) else f"{seconds / MS:.3g}"


def fmt_rate(value) -> str:
    if pd.isna(value):
        return ""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def fmt_gb(nbytes) -> str:
    return "" if pd.isna(nbytes) else f"{nbytes / GB:.1f}"


def fmt_value(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if pd.isna(value) else f"{value:g}"
    return "" if value is None else str(value)


def html_table(frame: pd.DataFrame, css: str = "numbers") -> str:
    """An escaped HTML table of already formatted cells."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def summary(data: ReportData) -> pd.DataFrame:
    """One row per profile: configs, median and best throughput, memory fit, bottleneck."""
    rows = []
    for hw, sub in data.table.groupby(data.table["hardware"].astype(str), sort=False):
        best = sub.loc[sub["tokens_per_s"].idxmax()] if sub["tokens_per_s"].notna().any() else None
        row = {
            "profile": data.label(hw), "kind": data.kind(hw), "configs": f"{len(sub):,}",
            "median time (ms)": fmt_ms(sub["time_s"].median()),
            "median tokens/s": fmt_rate(sub["tokens_per_s"].median()),
            "best tokens/s": fmt_rate(best["tokens_per_s"]) if best is not None else "",
            "best config": ", ".join(f"{a}={fmt_value(best[a])}" for a in data.axes)
            if best is not None else "",
            "MoE layers fit in memory": f"{100 * sub['moe_fits_in_memory'].mean():.0f}%",
            "most common bottleneck": sub["bottleneck"].mode().iat[0],
        }
        if data.has("measured_time_s"):
            err = (sub["time_s"] - sub["measured_time_s"]).abs() / sub["measured_time_s"]
            row["median |error|"] = f"{100 * err.median():.1f}%"
        rows.append(row)
    return pd.DataFrame(rows)


def detail(data: ReportData, limit: int) -> tuple[pd.DataFrame, int]:
    """At most ``limit`` rows (evenly spaced through the table), formatted; and the total."""
    table = evenly(data.table, limit)
    out = pd.DataFrame({"profile": table["hardware"].map(data.label)})
    for axis in data.axes:
        out[axis] = table[axis].map(fmt_value)
    out["time (ms)"] = table["time_s"].map(fmt_ms)
    out["tokens/s"] = table["tokens_per_s"].map(fmt_rate)
    for p in PHASES:
        col = f"{p}_s"
        if col in table.columns and (data.table[col] > 0).any():
            out[f"{p} (ms)"] = table[col].map(fmt_ms)
    if "measured_time_s" in table.columns:
        out["measured (ms)"] = table["measured_time_s"].map(fmt_ms)
    out["bottleneck"] = table["bottleneck"].astype(str)
    out["MoE-layer memory (GB)"] = table["moe_memory_bytes_per_device"].map(fmt_gb)
    out["capacity (GB)"] = table["memory_capacity_bytes"].map(fmt_gb)
    out["MoE layers fit"] = table["moe_fits_in_memory"].map(lambda v: "yes" if v else "no")
    return out, len(data.table)
