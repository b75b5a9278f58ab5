"""The published-figures table (benchmarks/published_figures.py) is well-formed and every setup
gives a finite moesim prediction. No test here asserts closeness to a published figure: those
figures are a comparison, not a target."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "published_figures.py"
METRICS = {"output_tokens_per_s_per_node": "tokens/s per node",
           "input_tokens_per_s_per_node": "tokens/s per node",
           "output_tokens_per_s_per_gpu": "tokens/s per GPU"}


def _module():
    spec = importlib.util.spec_from_file_location("published_figures", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PF = _module()


def test_ids_unique():
    ids = [s["id"] for s in PF.SETUPS]
    assert len(ids) == len(set(ids)) >= 3


@pytest.mark.parametrize("setup", PF.SETUPS, ids=lambda s: s["id"])
def test_setup_well_formed(setup):
    assert setup["source_url"].startswith("https://")
    assert setup["source_title"] and setup["quote"] and setup["not_in_moesim"]
    assert METRICS[setup["metric"]] == setup["unit"]
    assert math.isfinite(setup["published"]) and setup["published"] > 0
    assert setup["hardware"] and setup["gpus"] > 0
    run = setup["run"]
    devices = run.get("tp", 1) * run.get("dp_attn", 1) * run.get("pp", 1)
    assert devices == setup["gpus"], "the moesim layout must use the stated GPU count"
    if setup["metric"] == "output_tokens_per_s_per_gpu":
        assert setup["prefill"]["phase"] == "prefill" and setup["isl"] > 0 < setup["osl"]
    else:
        assert "prefill" not in setup


@pytest.mark.parametrize("setup", PF.SETUPS, ids=lambda s: s["id"])
def test_prediction_finite(setup):
    for hw in setup["hardware"]:
        pred = PF.predict_setup(setup, hw)
        assert math.isfinite(pred["predicted"]) and pred["predicted"] > 0, hw
        assert pred["fits_in_memory"], f"{setup['id']} on {hw} does not fit in moesim's memory model"


def test_time_shared_throughput_formula():
    """In-flight batching figures: 1 / (TPOT / b + (ISL / OSL) / P), checked by hand on the
    decode and prefill predictions the function reads."""
    from moesim.serving import predict_model

    setup = next(s for s in PF.SETUPS if s["metric"] == "output_tokens_per_s_per_gpu")
    hw = setup["hardware"][0]
    d = predict_model(setup["model"], hw, **setup["run"])
    p = predict_model(setup["model"], hw, **setup["prefill"])
    b = setup["run"]["batch"] / setup["gpus"]
    expect = 1.0 / (d["tpot_s"] / b + setup["isl"] / setup["osl"] / p["tokens_per_s_per_device"])
    got = PF.predict_setup(setup, hw)
    assert got["predicted"] == pytest.approx(expect, rel=1e-12)
    assert got["predicted"] < got["decode_only"]  # prefill time can only lower output tokens/s


def test_write(tmp_path):
    tab = PF.table()
    PF.write(tab, {"date": "d", "commit": "c", "command": "x"}, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert all(s["source_url"] in text for s in PF.SETUPS)
    assert (tmp_path / "table.csv").read_text().count("\n") == len(tab) + 1
