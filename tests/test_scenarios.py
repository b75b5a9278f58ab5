"""Scenario files: shipped ones validate; bad ones fail before any work, naming file, line, field,
expectation and a close match; writes are atomic; the measurement hook is optional."""
from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pandas as pd
import pytest

from moesim.config import ConfigError
from moesim import fileio as io
from moesim.scenarios import load_scenario, run_scenario, scenario_from_text

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"
#: The scenarios this module ships (others in scenarios/ belong to the measurement side).
SHIPPED = [SCENARIO_DIR / f"{name}.yaml" for name in (
    "quickstart", "expert-count-sweep", "topk-sweep", "placement-skew",
    "deepseek-v3-decode-hardware", "prefill-vs-decode")]
GOOD = """\
name: ok
description: fine
model: mixtral-8x7b
hardware: [h100-sxm, b200]
run:
  ep: 8
sweep:
  tokens: [1, 16, 128]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    err = info.value
    assert err.file == str(path)
    return err


def test_shipped_scenarios_validate():
    for path in SHIPPED:
        sc = load_scenario(path)
        assert sc.name == path.stem
        assert len(sc.description) > 100, f"{path.name}: a paragraph saying what it answers"
        assert sc.points() > 0


def test_typo_in_top_level_key(tmp_path):
    err = error_of(tmp_path, GOOD.replace("description:", "descripton:"))
    assert err.line == 2
    assert err.field == "descripton"
    assert "did you mean 'description'" in str(err)
    assert str(err).startswith(f"{tmp_path / 'scenario.yaml'}:2: field 'descripton': unknown field")


def test_typo_in_sweep_field_suggests_and_lists(tmp_path):
    err = error_of(tmp_path, GOOD.replace("  tokens: [1, 16, 128]", "  tokenz: [1, 16, 128]"))
    assert (err.line, err.field) == (8, "sweep.tokenz")
    assert "did you mean 'tokens'" in err.message
    assert "expected one of:" in err.message


def test_wrong_type_names_expectation(tmp_path):
    err = error_of(tmp_path, GOOD.replace("ep: 8", "ep: eight"))
    assert (err.line, err.field) == (6, "run.ep")
    assert "valid integer" in err.message and "'eight'" in err.message


def test_unknown_preset_and_profile(tmp_path):
    err = error_of(tmp_path, GOOD.replace("mixtral-8x7b", "mixtral-8x7"))
    assert err.line == 3
    assert "did you mean 'mixtral-8x7b'" in err.message
    err = error_of(tmp_path, GOOD.replace("[h100-sxm, b200]", "[h100-sxm, b20]"))
    assert (err.line, err.field) == (4, "hardware.1")
    assert "unknown hardware profile 'b20'" in err.message and "did you mean 'b200'" in err.message


def test_empty_sweep_and_empty_list(tmp_path):
    no_sweep = GOOD.replace("  tokens: [1, 16, 128]\n", "").replace("sweep:", "sweep: {}")
    err = error_of(tmp_path, no_sweep)
    assert (err.line, err.field) == (7, "sweep") and "empty sweep" in err.message
    err = error_of(tmp_path, GOOD.replace("[1, 16, 128]", "[]"))
    assert (err.line, err.field) == (8, "sweep.tokens") and "empty list" in err.message


def test_zip_lengths_conflicts_and_combinations(tmp_path):
    err = error_of(tmp_path, GOOD + "  zip:\n    - experts: [8, 16]\n      top_k: [2]\n")
    assert err.line == 10 and "equal lengths" in err.message
    assert "experts: 2, top_k: 1" in err.message
    err = error_of(tmp_path, GOOD + "  ep: [1, 2]\n")
    assert err.field == "sweep.ep" and "both fixed (run) and swept" in err.message
    err = error_of(tmp_path, GOOD + "  top_k: [2, 16]\n")  # mixtral has 8 experts
    assert (err.line, err.field) == (9, "sweep.top_k")
    assert "top_k (16) must be <= experts (8)" in err.message


def test_bad_item_value_points_at_its_line(tmp_path):
    err = error_of(tmp_path, GOOD + "  overlap:\n    - none\n    - two-batches\n")
    assert (err.line, err.field) == (11, "sweep.overlap.1")
    assert "'none', 'shared' or 'two-batch'" in err.message


def test_placement_checked_against_experts_and_ep(tmp_path):
    text = GOOD.replace("mixtral-8x7b", "deepseek-v3").replace("ep: 8", "ep: 64")
    err = error_of(tmp_path, text + "  placement: [contiguous, 'replicated:32']\n")
    assert err.field == "sweep.placement" and "288" in err.message and "ep=64" in err.message


def test_missing_dtype_peak_suggests_override(tmp_path):
    text = GOOD.replace("mixtral-8x7b", "deepseek-v3").replace("b200", "a100-sxm-80gb")
    err = error_of(tmp_path, text)
    assert (err.line, err.field) == (4, "hardware.1")
    assert "no fp8 peak" in err.message and "compute_dtype: bf16" in err.message
    fixed = text.replace("[h100-sxm, a100-sxm-80gb]", "\n  - h100-sxm\n  - profile: a100-sxm-80gb"
                                                       "\n    overrides: {compute_dtype: bf16}")
    assert load_scenario(write(tmp_path, fixed)).points() == 6


def test_unsafe_yaml_is_rejected(tmp_path):
    err = error_of(tmp_path, GOOD.replace("description: fine",
                                          "description: !!python/object/apply:os.system [echo x]"))
    assert err.line == 2 and "invalid YAML" in err.message


def test_inline_model_and_missing_tokens(tmp_path):
    inline = GOOD.replace("model: mixtral-8x7b", "model:\n  hidden: 1024\n  expert_ffn: 512\n"
                                                 "  experts: 16\n  top_k: 2\n")
    sc = load_scenario(write(tmp_path, inline))
    assert sc.model_ref == "custom" and sc.model_fields["experts"] == 16
    err = error_of(tmp_path, GOOD.replace("  tokens: [1, 16, 128]", "  top_k: [1, 2]"))
    assert "missing 'tokens'" in err.message


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "results.csv"
    io.write_text(target, "old,table\n1,2\n")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("new,tab", encoding="utf-8")
        raise KeyboardInterrupt  # interrupted mid-way

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(target, half_then_fail)
    assert target.read_text() == "old,table\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # no temp file left


def test_interrupted_run_leaves_previous_table(tmp_path, monkeypatch):
    sc = scenario_from_text(GOOD)
    run_scenario(sc, tmp_path, progress=False)
    before = (tmp_path / "results.csv").read_bytes()

    def broken_to_csv(self, path, **kw):
        Path(path).write_text("partial", encoding="utf-8")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    with pytest.raises(OSError):
        run_scenario(sc, tmp_path, progress=False)
    assert (tmp_path / "results.csv").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_measure_mode_without_hook_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "moesim.measure", types.ModuleType("moesim.measure"))
    err = error_of(tmp_path, GOOD + "mode: measure\n")
    assert err.line == 9 and err.field == "mode"
    assert "moesim.measure.run_scenario_measurements" in err.message


def test_both_mode_calls_hook_and_reports_measurements(tmp_path, monkeypatch):
    calls = []

    def hook(scenario, table, out_dir):
        calls.append((scenario.name, len(table), Path(out_dir)))
        return table.assign(measured_time_s=table["time_s"] * 1.25,
                            measured_experts_s=table["experts_s"] * 0.9)

    fake = types.ModuleType("moesim.measure")
    fake.run_scenario_measurements = hook
    monkeypatch.setitem(sys.modules, "moesim.measure", fake)
    result = run_scenario(scenario_from_text(GOOD + "mode: both\n"), tmp_path, progress=False)
    assert calls == [("ok", 6, tmp_path)]
    table = pd.read_csv(tmp_path / "results.csv")
    assert (table["measured_time_s"] / table["time_s"]).round(6).eq(1.25).all()
    page = result.files["report"].read_text()
    assert 'id="fig-measured"' in page and 'id="fig-phase_error"' in page


def test_relative_files_are_read_beside_the_scenario(tmp_path, monkeypatch):
    """A placement file, a profile and a routing trace next to the scenario are found from any
    working directory; preset names and built-in kinds are left alone."""
    import numpy as np

    from moesim.scenarios.paths import rebase

    folder = tmp_path / "study"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "place.yaml").write_text(
        "devices: [[0, 1, 2, 3], [4, 5, 6, 7]]\n", encoding="utf-8")
    (folder / "my-gpu.yaml").write_text("name: my-gpu\ndescription: t\nbase: h100-sxm\n", encoding="utf-8")
    ids = np.random.default_rng(0).integers(0, 8, size=(64, 2))
    ids[:, 1] = (ids[:, 0] + 1) % 8
    np.save(folder / "data" / "ids.npy", ids)
    (folder / "s.yaml").write_text(textwrap.dedent("""\
        name: rel
        model: mixtral-8x7b
        hardware: [{profile: my-gpu.yaml}, h100-sxm]
        run: {ep: 2, placement: data/place.yaml}
        sweep:
          tokens: [1, 16]
          routing: [uniform, "trace:data/ids.npy"]
        """), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    table = run_scenario(load_scenario(folder / "s.yaml"), tmp_path / "out", progress=False).table
    assert len(table) == 8 and (table["time_s"] > 0).all()
    assert len(set(table["hardware"])) == 2 and set(table["placement"]) == {
        str(Path("..") / "study" / "data" / "place.yaml")}
    assert rebase("h100-sxm", folder) == "h100-sxm"
    assert rebase("zipf:1.2", folder) == "zipf:1.2"
    assert rebase("missing.yaml", folder) == "missing.yaml"
    assert rebase("trace:data/ids.npy", folder).endswith("data/ids.npy")


def test_gpu_validation_scenario_is_ready_for_a_calibrated_profile():
    """validation-gpu names the profile the GPU runbook writes; with any profile in its place it
    is a valid 48-config scenario whose every row the measured layers can run."""
    from moesim.measure.runner import MeasureSettings, build_case
    from moesim.scenarios.sweep import expand

    text = (SCENARIO_DIR / "validation-gpu.yaml").read_text(encoding="utf-8")
    assert "profile: gpu-calibrated" in text
    scenario = scenario_from_text(text.replace("gpu-calibrated", "h100-sxm"))
    assert scenario.points() == 48
    for row in expand(scenario).to_dict(orient="records"):
        case = build_case(row, MeasureSettings())
        assert case["dtype"] == "bf16" and case["ep"] == 1
