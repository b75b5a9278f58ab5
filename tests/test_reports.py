"""HTML reports: self-contained (plotly.js once, inline), user text escaped, figures chosen from
the sweep's axes, the table capped; and, in headless Chromium, every figure draws without errors."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from moesim import predict_many
from moesim.reports import ReportData, render, write_report
from moesim.reports.maps import map_axes

PLOTLY_HEADER = re.compile(r"\* plotly\.js v\d+\.\d+\.\d+")
EVIL = "</p><script>alert('pwned')</script>"
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000"]
#: Injected before plotly.js: records uncaught errors and console.error, then counts plots.
PROBE = """<script>window.__errors=[];
window.addEventListener('error',function(e){__errors.push(String(e.message))});
(function(){var ce=console.error;console.error=function(){__errors.push(
Array.prototype.join.call(arguments,' '));ce.apply(console,arguments)};})();
window.addEventListener('load',function(){setTimeout(function(){var p=document.createElement('pre');
p.id='probe';p.textContent=JSON.stringify({errors:__errors,
plots:document.querySelectorAll('.js-plotly-plot').length,
svgs:document.querySelectorAll('.js-plotly-plot .main-svg').length,
traces:document.querySelectorAll('.js-plotly-plot .trace').length});
document.body.appendChild(p)},1000)});</script>"""


def table(measured: bool = False, profiles=("h100-sxm", "b200")) -> pd.DataFrame:
    rows = [{"model": "mixtral-8x7b", "hardware": hw, "tokens": t, "ep": ep, "experts": e,
             "top_k": k, "expert_ffn": 28672 // k}
            for hw in profiles for t in (1, 32, 512) for ep in (1, 8)
            for e, k in ((8, 2), (16, 4))]
    out = predict_many(pd.DataFrame(rows))
    if measured:
        out["measured_time_s"] = out["time_s"] * 1.1
        out["measured_experts_s"] = out["experts_s"] * 0.8
        out["measured_combine_s"] = out["combine_s"] * 1.3
        out["predicted_band_low_s"] = out["time_s"] * 0.9
        out["predicted_band_high_s"] = out["time_s"] * 1.2
    return out


META = {"moesim_version": "0.1.0", "scenario": {
    "name": "demo", "description": f"Question {EVIL}", "swept_fields": ["tokens", "ep", "experts",
                                                                         "top_k", "expert_ffn"],
    "zip_groups": [["experts", "top_k", "expert_ffn"]]}}


def figure_ids(page: str) -> list[str]:
    return re.findall(r'<div id="fig-([a-z_]+)" class="plotly-graph-div"', page)


def test_plotly_bundle_inline_exactly_once_and_no_network():
    page = render(ReportData(table(), META))
    assert len(PLOTLY_HEADER.findall(page)) == 1
    assert page.count("Plotly.newPlot(") == len(figure_ids(page)) == 6
    assert not re.search(r"<script[^>]+src=", page)
    from plotly.offline import get_plotlyjs

    rest = page.replace(get_plotlyjs(), "")
    assert len(rest) < len(page) - 4_000_000  # the bundle was inline
    assert "http://" not in rest and "https://" not in rest  # nothing else to fetch


def test_user_text_is_escaped():
    page = render(ReportData(table(), META))
    assert EVIL not in page and "alert('pwned')" not in page
    assert html.escape(EVIL) in page
    scripts = re.findall(r"<script\b", page)
    assert len(scripts) == 2 + len(figure_ids(page))  # PlotlyConfig, the bundle, one per figure


def test_figures_follow_the_data():
    page = render(ReportData(table(), META))
    assert figure_ids(page) == ["throughput", "phases", "bottleneck", "memory", "roofline",
                                "hardware"]
    one = render(ReportData(table(profiles=("h100-sxm",)), META))
    assert "hardware" not in figure_ids(one)  # nothing to compare with one profile
    measured = render(ReportData(table(measured=True), META))
    assert figure_ids(measured)[-2:] == ["measured", "phase_error"]
    picked = render(ReportData(table(), META), figures_wanted=["roofline", "memory"])
    assert figure_ids(picked) == ["memory", "roofline"]


def test_map_axes_skip_zipped_pairs():
    data = ReportData(table(), META)
    assert data.axes == ["tokens", "ep", "experts", "top_k", "expert_ffn"]
    assert data.linked("experts", "top_k") and not data.linked("experts", "tokens")
    assert map_axes(data) == ("experts", "tokens")
    assert data.lead_axes() == ["tokens", "ep", "experts"]  # one throughput panel per zip group
    assert data.axis_title("experts") == "experts (with top_k, expert_ffn)"
    inferred = ReportData(table(), {})  # from a bare CSV: same axes, links found in the data
    assert set(inferred.axes) == set(data.axes) and map_axes(inferred) == ("experts", "tokens")


def test_table_is_capped_and_in_human_units():
    data = ReportData(table(), META)
    page = render(data, table_rows=5)
    assert f"Showing 5 of {len(data.table)} rows" in page
    assert "time (ms)" in page and "memory (GB)" in page
    body = page.split('id="tables"')[1]
    assert body.count("<tr>") == 1 + 2 + 1 + 5  # summary head + 2 profiles, detail head + 5
    full = render(data, table_rows=1000)
    assert f"All {len(data.table)} rows." in full


def test_write_report_is_atomic(tmp_path, monkeypatch):
    path = write_report(table(), tmp_path / "report.html", META)
    before = path.read_text()
    monkeypatch.setattr("moesim.reports.html.render", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_report(table(), path, META)
    assert path.read_text() == before


def run_in_chromium(page: str) -> dict:
    """Open ``page`` in headless Chromium; the probe's JSON after scripts ran."""
    probed = page.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + PROBE, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        path.write_text(probed, encoding="utf-8")
        proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp}/profile", "--dump-dom",
                               path.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no probe output; chromium stderr:\n{proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install -y chromium)")
def test_every_figure_draws_in_headless_chromium():
    page = render(ReportData(table(measured=True), META))
    expected = len(figure_ids(page))
    assert expected == 8
    probe = run_in_chromium(page)
    assert probe["errors"] == []
    assert probe["plots"] == expected
    assert probe["svgs"] >= expected  # each plot draws at least one main-svg
    assert probe["traces"] > expected
