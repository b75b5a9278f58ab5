"""Whole-model scenarios (scope: model): validation before work, outputs, report figures."""
from __future__ import annotations

import pandas as pd
import pytest

from moesim.config import ConfigError
from moesim.reports import model_figures
from moesim.scenarios import model_scope

GOOD = """\
name: tiny-serving
scope: model
model: olmoe-1b-7b
hardware: [h100-sxm, {profile: mi300x}]
run: {phase: decode, context: 1024}
sweep:
  batch: [1, 64]
  tp: [1, 2]
"""


def _write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_model_scenario_runs_and_writes_table_metadata_report(tmp_path):
    out = model_scope.run(_write(tmp_path, GOOD), tmp_path / "out", "test")
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2 * 2 * 2 and (table["tpot_s"] > 0).all()
    html = (out / "report.html").read_text()
    assert "Serving curve" in html and "Memory per device" in html
    assert (out / "metadata.json").exists() and (out / "scenario.yaml").exists()


@pytest.mark.parametrize("bad, field, expected", [
    ("  batch: [1, 64]", "sweep.batchh", "did you mean 'batch'"),
    ("  tp: [1, 2]", "sweep.tp", "greater than 0"),
    ("model: olmoe-1b-7b", "model", "did you mean"),
])
def test_bad_scenario_is_located_before_work(tmp_path, bad, field, expected):
    replacement = {"  batch: [1, 64]": "  batchh: [1, 64]", "  tp: [1, 2]": "  tp: [0, 2]",
                   "model: olmoe-1b-7b": "model: olmoe-1b-7"}[bad]
    path = _write(tmp_path, GOOD.replace(bad, replacement))
    with pytest.raises(ConfigError) as err:
        model_scope.load(path)
    assert expected in str(err.value) and err.value.line is not None


def test_html_escapes_user_text(tmp_path):
    text = GOOD.replace("name: tiny-serving", "name: tiny\ndescription: <script>x</script>")
    out = model_scope.run(_write(tmp_path, text), tmp_path / "o")
    assert "<script>x</script>" not in (out / "report.html").read_text()


def test_serving_curve_figure_leaves_out_what_does_not_fit():
    from moesim.serving import serving_curve

    curve = serving_curve("qwen3-30b-a3b", "h100-sxm", context=8192)
    over = curve.iloc[[-1]].assign(batch=10 ** 6, fits_in_memory=0.0)
    fig = model_figures.serving_curve(pd.concat([curve, over]))
    assert len(fig.data) == 1 and len(fig.data[0].x) == len(curve)
    assert model_figures.memory_stack(curve) is not None
    assert model_figures.time_by_kind(curve) is not None
