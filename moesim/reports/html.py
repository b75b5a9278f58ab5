"""One self-contained HTML report: plotly.js embedded once, figures, tables; user text escaped."""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from moesim.reports import figures, maps, measured, tables
from moesim.reports.data import ReportData

#: name -> (title, caption, builder), in page order.
SECTIONS = {
    "throughput": ("Throughput against each swept field", "Median tokens/s of the EP group over "
                   "the other swept fields, one line per profile; hover for min and max.",
                   figures.throughput),
    "phases": ("Per-phase latency", "Median time of each phase on the slowest device, stacked, "
               "in ms or as a share of the phases' sum (buttons); with overlap the stack can "
               "exceed the layer time.", figures.phases),
    "bottleneck": ("Bottleneck map", "Most common bottleneck (phase:resource) in each cell.",
                   maps.bottleneck),
    "memory": ("Memory per device against capacity", "Weights and buffers of the MoE layers on "
               "one device as a share of its capacity (max over the other swept fields); above "
               "the dashed line it does not fit. Hover for GB.", maps.memory),
    "roofline": ("Roofline", "Each point is a config (sampled): FLOP per byte of HBM traffic "
                 "against FLOP/s over the whole layer time, communication included; dashed: the "
                 "profile's roof (peak FLOP/s of the GEMM dtype, HBM bandwidth).", maps.roofline),
    "hardware": ("Hardware comparison", "Left: tokens/s over all configs (box: quartiles, "
                 "whiskers: min and max); right: the first profile's time over this profile's, "
                 "config by config.", figures.hardware),
    "measured": ("Predicted against measured", "Layer time; error bars: the predicted band "
                 "where given.", measured.predicted_vs_measured),
    "phase_error": ("Error by phase", "(predicted - measured) / measured per phase.",
                    measured.phase_error),
}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1320px;color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.caption,p.note{color:#555;font-size:14px}.meta td{padding:2px 12px 2px 0;font-size:14px}
table.numbers{border-collapse:collapse;font-size:13px}
table.numbers th,table.numbers td{border:1px solid #ddd;padding:3px 8px;text-align:right;
white-space:nowrap}
table.numbers th{background:#f4f4f4;position:sticky;top:0}.scroll{max-height:640px;overflow:auto}
"""


def render(data: ReportData, figures_wanted="all", table_rows: int = 200) -> str:
    """The report page as a string."""
    names = list(SECTIONS) if figures_wanted == "all" else [n for n in SECTIONS
                                                            if n in figures_wanted]
    blocks = []
    for name in names:
        title, caption, build = SECTIONS[name]
        fig = build(data)
        if fig is not None:
            blocks.append(_figure_block(name, title, caption, fig))
    body = [_header(data), *blocks, _tables(data, table_rows)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(data.title)} — moesim report</title><style>{CSS}</style>"
            "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};"
            f"</script>\n<script type=\"text/javascript\">{get_plotlyjs()}</script>\n</head>"
            f"<body>\n{''.join(body)}\n</body></html>\n")


def write_report(table: pd.DataFrame, path: str | Path, meta: dict | None = None,
                 figures_wanted="all", table_rows: int = 200) -> Path:
    """Render ``table`` and write it atomically to ``path``."""
    from moesim.fileio import write_text

    page = render(ReportData(table, meta or {}), figures_wanted, table_rows)
    return write_text(path, page)


def _figure_block(name: str, title: str, caption: str, fig) -> str:
    height = fig.layout.height or 450
    div = pio.to_html(fig, include_plotlyjs=False, full_html=False, config=PLOT_CONFIG,
                      div_id=f"fig-{name}", default_width="100%", default_height=f"{height}px")
    return (f'<section id="{name}"><h2>{html.escape(title)}</h2>'
            f'<p class="caption">{html.escape(caption)}</p>{div}</section>\n')


def _header(data: ReportData) -> str:
    from moesim import __version__

    meta, sc = data.meta, data.scenario
    rows = [("scenario", sc.get("name", "")), ("model", sc.get("model", "")),
            ("mode", sc.get("mode", "")), ("rows", f"{len(data.table):,}"),
            ("swept", ", ".join(data.axes) or "nothing (one config per profile)"),
            ("moesim", _versions(meta.get("moesim_version"), __version__)),
            ("git commit", meta.get("git_commit") or "unknown"),
            ("date", meta.get("created_utc", "")),
            ("command", meta.get("command", ""))]
    info = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows if v)
    profiles = pd.DataFrame([{"profile": data.label(h), "kind": data.kind(h),
                              "digest": meta.get("profiles", {}).get(h, {}).get("digest", ""),
                              "given as": h} for h in data.profiles])
    desc = html.escape(sc.get("description", "")).strip()
    return (f"<header><h1>{html.escape(data.title)}</h1>"
            + (f"<p>{desc}</p>" if desc else "")
            + f'<table class="meta">{info}</table>'
            + "<h3>Hardware profiles</h3><p class=\"note\">datasheet: peaks and assumed "
              "efficiencies from vendor data; calibrated: efficiencies fitted to measurements."
              "</p>" + tables.html_table(profiles) + "</header>\n")


def _versions(run: str | None, now: str) -> str:
    """The version that produced the table, and the report's when it differs."""
    if not run:
        return f"{now} (report; the table's version is unknown)"
    return run if run == now else f"{run} (report: {now})"


def _tables(data: ReportData, limit: int) -> str:
    if not data.has("time_s"):
        return ""
    out = ['<section id="tables"><h2>Numbers</h2><h3>Per profile</h3>',
           tables.html_table(tables.summary(data))]
    if limit > 0:
        detail, total = tables.detail(data, limit)
        note = (f"All {total:,} rows." if len(detail) == total else
                f"Showing {len(detail):,} of {total:,} rows, evenly spaced through the table; "
                "the full table is in results.csv / results.parquet.")
        out += [f'<h3>Configs</h3><p class="note">{html.escape(note)}</p>',
                f'<div class="scroll">{tables.html_table(detail)}</div>']
    return "".join(out) + "</section>\n"
