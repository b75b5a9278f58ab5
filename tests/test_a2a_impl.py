"""The run field ``a2a_impl``: dispatch/combine priced by a profile's fitted kernel family.

Golden cases: Mixtral-8x7B shape (8 experts, top-2, hidden 4096, bf16 dispatch/combine), uniform
routing, per-expert copies, EP 8 on one node: each device holds one expert (q = 2/8), so a device
sends T x 7 x 0.25 = 112 copies at T = 64. The expected-value model inflates what the busiest
device receives by its load fluctuation (``loads.expected_loads``): the device's load is a sum of
T x D = 512 Bernoulli(q) picks, mean 128, variance 128 x 0.75 = 96, so
factor = 1 + z_8 sqrt(96) / 128 with z_8 the model's E[max of 8 standard normals]; the exchange
moves max(sent, received) = 112 x factor copies of 4096 x 2 B each way, all over NVLink.
"""
import json

import numpy as np
import pandas as pd
import pytest

import moesim
from moesim.cli import main
from moesim.config import ConfigError
from moesim.core.loads import expected_max_std_normal

KERNELS = """
alltoall_kernels:
  gold/dispatch: {link: scale_up, latency_s: 1.0e-5, bandwidth_bytes_per_s: 1.0e11,
                  basis: assumption, note: round numbers for a test}
  gold/combine: {link: scale_up, latency_s: 2.0e-5, bandwidth_bytes_per_s: 5.0e10,
                 basis: assumption, note: round numbers for a test}
  deepep_x/dispatch: {link: scale_up, latency_s: 1.0e-5, bandwidth_bytes_per_s: 1.0e11,
                      basis: assumption, note: round numbers for a test}
  deepep_x/combine: {link: scale_up, latency_s: 1.0e-5, bandwidth_bytes_per_s: 1.0e11,
                     basis: assumption, note: round numbers for a test}
  wire/alltoall: {link: scale_out, latency_s: 1.0e-3, bandwidth_bytes_per_s: 1.0e10,
                  basis: assumption, note: round numbers for a test}
"""
COPIES_T64 = 112 * (1 + float(expected_max_std_normal(8)) * np.sqrt(96) / 128)
BYTES_T64 = COPIES_T64 * 4096 * 2  # ~1.0175 MB each way per device at T = 64, EP 8

@pytest.fixture
def kernels_gpu(tmp_path) -> str:
    path = tmp_path / "kernels-gpu.yaml"
    path.write_text("name: kernels-gpu\ndescription: h100 with round-number kernel laws\n"
                    "base: h100-sxm\nkind: calibrated\n" + KERNELS)
    return str(path)


def _layer(hw, **kw):
    return moesim.predict("mixtral-8x7b", hw, 64, ep=8, **kw)


def test_family_prices_dispatch_and_combine_by_its_law(kernels_gpu):
    """dispatch = 10 us + bytes / 100 GB/s (~20.18 us); combine (the mirror image, the same bytes)
    = 20 us + bytes / 50 GB/s; no launch overhead added."""
    r = _layer(kernels_gpu, a2a_impl="gold")
    assert r.breakdown_s["dispatch"] == pytest.approx(1e-5 + BYTES_T64 / 1e11, rel=1e-12)
    assert r.breakdown_s["combine"] == pytest.approx(2e-5 + BYTES_T64 / 5e10, rel=1e-12)
    assert r.comm_bytes["intra_node"] == pytest.approx(2 * BYTES_T64)


def test_deepep_family_counts_the_fits_bf16_payload(kernels_gpu):
    """DeepEP fits count 2 x hidden bytes per copy: fp8 dispatch (4096 + 128 B scales = 4224 B
    per copy) costs the same time as bf16, while the reported bytes stay fp8's."""
    assert COPIES_T64 == pytest.approx(124.2, abs=0.1)
    bf16 = _layer(kernels_gpu, a2a_impl="deepep_x")
    fp8 = _layer(kernels_gpu, a2a_impl="deepep_x", dispatch_dtype="fp8")
    assert bf16.breakdown_s["dispatch"] == pytest.approx(1e-5 + BYTES_T64 / 1e11, rel=1e-12)
    assert fp8.breakdown_s["dispatch"] == pytest.approx(bf16.breakdown_s["dispatch"], rel=1e-12)
    assert fp8.comm_bytes["intra_node"] == pytest.approx(COPIES_T64 * 4224 + BYTES_T64)


def test_scale_out_kernel_prices_the_network_and_serves_both_directions(kernels_gpu):
    """``wire/alltoall`` (scale_out, 1 ms, 10 GB/s) for both directions; EP 16 over two nodes of
    8 with 16 experts top-2: q = 1/8 per device, so a device sends T x 8 / 8 = 64 copies over the
    network at T = 64, received x (1 + z_16 sqrt(1024 x 1/8 x 7/8) / 128): 1 ms + ~58 us, far
    above the NVLink part."""
    r = moesim.predict("mixtral-8x7b", kernels_gpu, 64, ep=16, experts=16, a2a_impl="wire")
    factor = 1 + float(expected_max_std_normal(16)) * np.sqrt(112) / 128
    expected = 1e-3 + 64 * factor * 4096 * 2 / 1e10
    assert r.breakdown_s["dispatch"] == pytest.approx(expected, rel=1e-12)
    assert r.breakdown_s["combine"] == pytest.approx(expected, rel=1e-12)

def test_link_default_is_unchanged(kernels_gpu):
    default = _layer(kernels_gpu)
    link = _layer(kernels_gpu, a2a_impl="link")
    assert link.breakdown_s == default.breakdown_s and link.time_s == default.time_s
    assert default.breakdown_s["dispatch"] != _layer(kernels_gpu, a2a_impl="gold").breakdown_s[
        "dispatch"]


@pytest.mark.parametrize("impl, words", [
    ("gld", ["a2a_impl", "'gld'", "did you mean 'gold'", "deepep_x, gold, wire"]),
    ("gold/dispatch", ["a2a_impl", "link, deepep_x, gold, wire"])])
def test_unknown_family_lists_the_profiles_families(kernels_gpu, impl, words):
    with pytest.raises(ConfigError) as err:
        _layer(kernels_gpu, a2a_impl=impl)
    assert err.value.field == "a2a_impl"
    assert all(w in str(err.value) for w in words)


def test_datasheet_profile_has_no_families():
    with pytest.raises(ConfigError, match="no alltoall_kernels.*calibrate --from-aic") as err:
        _layer("h100-sxm", a2a_impl="deepep_ll")
    assert err.value.field == "a2a_impl"


def test_predict_many_column_mixes_families(kernels_gpu):
    df = pd.DataFrame({"model": "mixtral-8x7b", "hardware": kernels_gpu, "tokens": 64, "ep": 8,
                       "a2a_impl": ["link", "gold", "deepep_x"]})
    out = moesim.predict_many(df)
    for impl, dispatch_s in zip(out["a2a_impl"], out["dispatch_s"]):
        assert dispatch_s == pytest.approx(_layer(kernels_gpu, a2a_impl=impl).breakdown_s[
            "dispatch"], rel=1e-12)
    assert out["dispatch_s"][1] == pytest.approx(1e-5 + BYTES_T64 / 1e11, rel=1e-12)


def test_montecarlo_uses_the_family(kernels_gpu):
    """Uniform routing with one expert per device: sampled volumes vary, the law's latency
    stays, so every sample's dispatch is at least 10 us + its bytes / 100 GB/s > 10 us."""
    r = _layer(kernels_gpu, a2a_impl="gold", mode="montecarlo", samples=20)
    assert r.breakdown_s["dispatch"] == pytest.approx(1e-5 + BYTES_T64 / 1e11, rel=0.2)


def test_cli_flag(capsys):
    args = ["predict", "-m", "deepseek-v3", "-H", "h200-sxm-sglang", "-t", "128", "--ep", "8",
            "--json"]
    assert main(args) == 0
    link = json.loads(capsys.readouterr().out)
    assert main(args + ["--a2a-impl", "deepep_ll"]) == 0
    ll = json.loads(capsys.readouterr().out)
    assert ll["breakdown_s"]["dispatch"] != link["breakdown_s"]["dispatch"]
    assert ll["breakdown_s"]["dispatch"] == pytest.approx(moesim.predict(
        "deepseek-v3", "h200-sxm-sglang", 128, ep=8, a2a_impl="deepep_ll").breakdown_s[
        "dispatch"], rel=1e-12)


def test_whole_model_accepts_the_field():
    from moesim.serving import predict_model

    kw = dict(phase="decode", batch=64, context=1024, dp_attn=8)
    link = predict_model("deepseek-v3", "h200-sxm-sglang", **kw)
    ll = predict_model("deepseek-v3", "h200-sxm-sglang", a2a_impl="deepep_ll", **kw)
    assert ll["a2a_impl"] == "deepep_ll" and ll["tpot_s"] != link["tpot_s"]
