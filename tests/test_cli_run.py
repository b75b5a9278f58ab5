"""``moesim run``, ``moesim compare`` and ``moesim report`` end to end through the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from moesim import __version__
from moesim.cli import main
from moesim.config import load_profile

QUICKSTART = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml"


@pytest.mark.parametrize("command", ["run", "compare", "report"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: moesim " + command in capsys.readouterr().out


def test_run_writes_table_copy_metadata_and_report(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["run", str(QUICKSTART), "--out", str(out), "--no-progress"]) == 0
    assert f"wrote {out}/ (20 rows)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "metadata.json", "report.html", "results.csv", "results.parquet", "scenario.yaml"]
    csv = pd.read_csv(out / "results.csv")
    parquet = pd.read_parquet(out / "results.parquet")
    assert len(csv) == len(parquet) == 20  # 5 token counts x 4 profiles
    assert set(csv["hardware"]) == {"h100-sxm", "h200-sxm", "b200", "mi300x"}
    assert {"tokens", "ep", "experts", "hidden", "time_s", "tokens_per_s", "bottleneck",
            "moe_memory_bytes_per_device", "moe_fits_in_memory"} <= set(csv.columns)
    assert list(csv.columns) == list(parquet.columns)
    pd.testing.assert_series_equal(csv["time_s"], parquet["time_s"], check_exact=False)
    assert (out / "scenario.yaml").read_text() == QUICKSTART.read_text()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["moesim_version"] == __version__
    assert "git_commit" in meta and meta["created_utc"].startswith("20")
    assert meta["profiles"]["b200"]["digest"] == load_profile("b200").digest()
    assert meta["profiles"]["b200"]["kind"] == "datasheet"
    assert meta["scenario"]["swept_fields"] == ["tokens"] and meta["rows"] == 20
    assert meta["command"] == f"moesim run {QUICKSTART} --out {out}"
    page = (out / "report.html").read_text()
    assert "<h1>quickstart</h1>" in page and 'id="fig-roofline"' in page


def test_run_default_directory_is_results_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(QUICKSTART), "--no-progress"]) == 0
    assert (tmp_path / "results" / "quickstart" / "results.csv").is_file()


def test_run_check_and_bad_scenario_exit_code(tmp_path, capsys):
    assert main(["run", str(QUICKSTART), "--check"]) == 0
    assert "ok: 20 rows = 4 profile(s) x [tokens (5)]" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text().replace("  ep: 8", "  epp: 8"), encoding="utf-8")
    assert main(["run", str(bad), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "run.epp" in err and "did you mean 'ep'" in err
    assert not (tmp_path / "never").exists()


def test_report_rebuilds_from_csv(tmp_path, capsys):
    out = tmp_path / "quick"
    main(["run", str(QUICKSTART), "--out", str(out), "--no-progress"])
    (out / "report.html").unlink()
    assert main(["report", str(out / "results.csv")]) == 0
    page = (out / "report.html").read_text()
    assert "<h1>quickstart</h1>" in page and 'id="fig-throughput"' in page
    alone = tmp_path / "alone.csv"  # no metadata.json beside it: axes inferred from the table
    alone.write_bytes((out / "results.csv").read_bytes())
    assert main(["report", str(alone), "--out", str(tmp_path / "r.html"), "--table-rows", "3"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Showing 3 of 20 rows" in page and 'id="fig-throughput"' in page
    assert main(["report", str(tmp_path / "missing.csv")]) == 2


def test_compare_prints_side_by_side_and_writes_report(tmp_path, capsys):
    report, csv = tmp_path / "cmp.html", tmp_path / "cmp.csv"
    code = main(["compare", "--model", "deepseek-v3", "--hardware", "h100-sxm,h200-sxm,b200,mi300x",
                 "--tokens", "1,128", "--ep", "64", "--report", str(report), "--csv", str(csv)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.split()[:1] and line.split()[0] in
            ("h100-sxm", "h200-sxm", "b200", "mi300x")]
    assert len(rows) == 8 and all(" 64 " in r for r in rows)
    assert "  1.00x  " in rows[0] and "  1.00x  " in rows[4]  # the first profile against itself
    table = pd.read_csv(csv)
    assert len(table) == 8 and set(table["tokens"]) == {1, 128}
    assert 'id="fig-hardware"' in report.read_text()


def test_compare_needs_fallback_for_missing_fp8(capsys):
    args = ["compare", "-m", "deepseek-v3", "--hardware", "h100-sxm,a100-sxm-80gb", "-t", "128",
            "--ep", "8"]
    assert main(args) == 2
    assert "--fallback-dtype" in capsys.readouterr().err
    assert main(args + ["--fallback-dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "a100-sxm-80gb*" in out and "computes in bf16" in out


@pytest.mark.parametrize("name", ["expert-count-sweep", "topk-sweep", "placement-skew",
                                  "deepseek-v3-decode-hardware", "prefill-vs-decode"])
def test_every_shipped_scenario_runs(name, tmp_path):
    from moesim.scenarios import load_scenario

    path = QUICKSTART.with_name(f"{name}.yaml")
    assert main(["run", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert len(table) == load_scenario(path).points()
    assert table["time_s"].gt(0).all() and table["tokens_per_s"].gt(0).all()
    page = (tmp_path / "report.html").read_text()
    assert page.count('class="plotly-graph-div"') >= 5


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "moesim", "run", str(QUICKSTART), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
