"""The per-call GEMM fixed cost (``efficiency.gemm_call``): what the model charges, how it is
fitted from grouped GEMMs of small weights, and that the expert-FFN table is fitted net of it."""
import numpy as np
import pytest

from moesim import predict
from moesim.calibration import call_fit, ffn_fit
from moesim.calibration.gemm_fit import GemmDevice
from moesim.config import ConfigError, load_profile
from moesim.core import gemm
from moesim.harness.microbench.plan import call_points
from moesim.harness.records import Record
from moesim.harness.stats import Stats


def _load(counts):
    c = np.asarray(counts, dtype=float).reshape(1, -1)
    return gemm.DeviceLoad.from_slots(c, (c > 0).astype(float), np.zeros(c.shape[1], dtype=int),
                                      1, 1)


def _cost(load, call_s):
    return gemm.grouped_gemm(load, 256, 512, 256 * 512 * 2, 768 * 2, peak_flops_per_s=1e11,
                             units=1, tile_m=1, tile_n=1, eff_gemm=lambda m: 0.5 + 0 * m,
                             mem_bytes_per_s=2e10, eff_mem=1.0, launch_overhead_s=2e-6,
                             call_fixed_s=call_s)


def test_each_expert_with_tokens_pays_the_call_cost_once():
    """Hand-derived: 3 of 5 experts have rows, so the call cost adds 3 x 15 us exactly."""
    load = _load([4, 0, 7, 0, 1])
    with_call, without = _cost(load, 15e-6), _cost(load, 0.0)
    assert with_call.time_s[0, 0] - without.time_s[0, 0] == pytest.approx(45e-6, rel=1e-12)
    assert np.array_equal(with_call.compute_s, without.compute_s)


def test_profile_cost_reaches_predict(tmp_path):
    """A bf16 layer on a profile with a per-call cost is slower by 2 GEMMs x experts hit x c."""
    base = tmp_path / "base.yaml"
    base.write_text("name: cpu-nocall\nbase: cpu\nkind: calibrated\ndescription: test\n")
    withc = tmp_path / "call.yaml"
    withc.write_text("name: cpu-call\nbase: cpu\nkind: calibrated\ndescription: test\nefficiency:\n  gemm_call:\n"
                     "    basis: measured\n    fixed_s: {bf16: 2.0e-5}\n    note: test value\n")
    kw = dict(tokens=4096, hidden=256, expert_ffn=256, experts=8, top_k=2, shared_experts=0,
              weight_dtype="bf16", activation_dtype="bf16")
    a = predict("mixtral-8x7b", str(base), **kw)
    b = predict("mixtral-8x7b", str(withc), **kw)
    assert b.breakdown_s["experts"] - a.breakdown_s["experts"] == pytest.approx(
        2 * 8 * 2e-5, rel=1e-9)  # every expert is hit at 8,192 (token, expert) pairs
    assert b.breakdown_s["router"] - a.breakdown_s["router"] == pytest.approx(2e-5, rel=1e-9)


def test_bad_call_cost_is_refused_with_its_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: cpu-bad\nbase: cpu\nkind: calibrated\ndescription: test\nefficiency:\n  gemm_call:\n"
                   "    basis: measured\n    fixed_s: {bf16: -1.0e-6}\n    note: test value\n")
    with pytest.raises(ConfigError, match=r"fixed_s\['bf16'\]"):
        load_profile(str(bad))


def _records(c_s, bw, rate, impl="grouped", launch_s=2e-6, dtype="bf16"):
    out = []
    for e, m, shape in call_points():
        wbytes = e * shape.k * shape.n * 2
        flops = 2.0 * e * m * shape.k * shape.n
        t = e * c_s + wbytes / bw + flops / rate + (1 if impl == "grouped" else e) * launch_s
        out.append(Record("grouped_gemm", {"dtype": dtype, "experts": e, "m": m, "k": shape.k,
                                           "n": shape.n, "source": shape.source,
                                           "weight_bytes": wbytes, "flops": flops,
                                           "impl": impl}, Stats.from_samples([t])))
    return out


@pytest.mark.parametrize("impl", ["grouped", "loop"])
def test_call_fit_recovers_a_known_law(impl):
    fits = call_fit.fit_call_fixed(_records(15e-6, 2e10, 1e11, impl), impl, 2e-6)
    assert fits["bf16"]["fixed_s"] == pytest.approx(15e-6, rel=1e-6)
    assert fits["bf16"]["fit_error"]["max_abs_pct"] < 1e-3 and not fits["bf16"]["bound_hit"]
    entry = call_fit.profile_entry(fits)
    assert entry["fixed_s"] == {"bf16": pytest.approx(15e-6, rel=1e-3)}


def test_call_fit_never_exceeds_the_smallest_call():
    """Per-expert times of 15 us whose 16-expert calls run 10 % faster: the free intercept sits
    above the smallest per-expert time; the fit stops at that bound and says so."""
    recs = []
    for r in _records(15e-6, 1e30, 1e30):
        scale = 0.9 if r.params["experts"] == 16 else 1.0
        recs.append(Record(r.kind, r.params, Stats.from_samples([r.stats.median_s * scale])))
    fit = call_fit.fit_call_fixed(recs, "grouped", 2e-6)["bf16"]
    smallest = min((r.stats.median_s - 2e-6) / r.params["experts"] for r in recs)
    assert fit["fixed_s"] == pytest.approx(smallest, rel=1e-6)
    assert fit["bound_hit"] == ["fixed_s_max"]


def test_ffn_table_is_fitted_net_of_the_call_cost():
    """Times made by the model with a call cost c give back the same efficiency when the fit
    knows c, and a higher-than-true efficiency ignored (the table would carry c otherwise)."""
    dev = GemmDevice({"bf16": 1e11}, 1, 1, 1, 2e10, 2e-6, {"bf16": 20e-6})
    stream = {"bf16": ffn_fit.Streaming(1e10, 1.0)}
    counts = [8, 8, 8, 8]
    terms = ffn_fit.ffn_terms(dev, stream["bf16"], "bf16", counts, 256, 256, 3, True,
                              eff=lambda x: 0.3 + 0 * x)
    rec = Record("layer_experts", {"dtype": "bf16", "counts": counts, "hidden": 256, "ffn": 256,
                                   "matrices": 3}, Stats.from_samples([terms["time_s"]]))
    _, eff = ffn_fit.point_efficiency(dev, stream, True, [rec])
    assert eff[0] == pytest.approx(0.3, rel=1e-9)
    blind = GemmDevice({"bf16": 1e11}, 1, 1, 1, 2e10, 2e-6)
    assert ffn_fit.point_efficiency(blind, stream, True, [rec])[1][0] < 0.3
