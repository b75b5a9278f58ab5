"""Expert-FFN calibration (layer_experts / layer_shared_experts records) and the shared-core
stage model: the fit reads the efficiency where the cost model reads it, recovers a known
table, and the calibrated profile reproduces the layer phase it was fitted on."""
from __future__ import annotations

import numpy as np
import pytest

from moesim.calibration import ffn_fit, gemm_fit
from moesim.calibration.calibrate import Options, calibrate
from moesim.calibration.fit import interp_log
from moesim.calibration.profile_writer import write_profile
from moesim.config import load_profile
from moesim.core.layer import shared_cores
from moesim.harness.records import Measurements, Record, record_from_dict
from moesim.harness.stats import Stats
from moesim.predict import predict

RNG = np.random.default_rng(11)
TRUE = [(1, 0.05), (4, 0.15), (16, 0.35), (64, 0.55), (256, 0.7), (1024, 0.75), (4096, 0.72)]
LAUNCH = 2e-6
DEV = gemm_fit.GemmDevice({"fp32": 100e9}, units=1, tile_m=1, tile_n=128,
                          mem_bytes_per_s=20e9, launch_s=LAUNCH)
STREAM = {"fp32": ffn_fit.Streaming(act_bytes_per_s=8e9, act_kernels=3.0)}
SHAPES = [(512, 384, 12, 3), (384, 768, 24, 2), (256, 512, 16, 4)]
TOKENS = [4, 16, 64, 256, 1024, 4096]


def noisy(t: float, noise: float = 0.02) -> Stats:
    return Stats.from_samples(t * (1 + RNG.uniform(-noise, noise, size=9)))


def ffn_records(dev=DEV, stream=STREAM, table=TRUE, noise=0.02) -> list[Record]:
    """Records timed 'by' the cost model itself at a known efficiency table, with noise."""
    eff = lambda x: interp_log(table, x)  # noqa: E731
    out = []
    for hidden, ffn, experts, top_k in SHAPES:
        for tokens in TOKENS:
            counts = np.bincount(RNG.integers(0, experts, tokens * top_k), minlength=experts)
            base = {"dtype": "fp32", "hidden": hidden, "ffn": ffn, "matrices": 3,
                    "tokens": tokens, "experts": experts, "top_k": top_k}
            for kind, c in (("layer_experts", counts.tolist()), ("layer_shared_experts", [tokens])):
                t = ffn_fit.ffn_terms(dev, stream["fp32"], "fp32", c, hidden, ffn, 3, True,
                                      eff)["time_s"]
                out.append(Record(kind, {**base, "counts": c}, noisy(t, noise)))
    return out


def test_ffn_terms_hand_worked():
    """One expert of 64 tokens, hidden 512, ffn 384, gated, fp32 at 100 GFLOP/s:
    up GEMM 2*64*512*768 = 50.33 MFLOP -> 503.3 us at eff 1, down 2*64*384*512 = 25.17 MFLOP ->
    251.7 us; activation reads 64*768*4 and writes 64*384*4 bytes = 294,912 B at 8 GB/s =
    36.86 us + 3 kernels x 2 us; 2 GEMM launches x 2 us. x = 64 tokens per hit expert."""
    d = ffn_fit.ffn_terms(DEV, STREAM["fp32"], "fp32", [64], 512, 384, 3, True,
                          lambda x: np.full_like(x, 0.5))
    assert d["x"] == 64
    assert d["compute_s"] == pytest.approx(754.97e-6, rel=1e-4)
    assert d["fixed_s"] == pytest.approx(4e-6 + 36.864e-6 + 6e-6, rel=1e-4)
    assert d["time_s"] == pytest.approx(754.97e-6 / 0.5 + d["fixed_s"], rel=1e-4)


def test_fit_recovers_the_table_and_holds_out_shapes():
    fit = ffn_fit.fit_ffn(DEV, STREAM, True, ffn_records())
    q = fit.quality["fp32"]
    assert q["in_sample"]["mean_abs_pct"] < 3
    assert q["holdout"]["mean_abs_pct"] < 6 and "layer shape" in q["holdout_rule"]
    got = np.array([e for _, e in fit.tables["fp32"]])
    want = interp_log(TRUE, [x for x, _ in fit.tables["fp32"]])
    assert np.max(np.abs(got / want - 1)) < 0.05


def test_dense_table_gap_is_reported_with_its_sign():
    """A dense table 20 % too optimistic under-predicts the layer's FFNs by about 1/1.2 - 1."""
    recs = ffn_records(noise=0.0)
    optimistic = [(x, min(1.0, e * 1.2)) for x, e in TRUE]
    gap = ffn_fit.check_dense(DEV, STREAM, True, {"fp32": optimistic}, recs)["fp32"]
    assert -17 < gap["bias_pct"] < -10


def _measurements(with_ffn: bool) -> Measurements:
    cpu = load_profile("cpu")
    peak = cpu.compute.peak_flops_per_s["fp32"] / cpu.compute.units  # one thread
    dev = gemm_fit.GemmDevice({"fp32": peak}, 1, 1, cpu.compute.gemm_tile_n, 1e15, LAUNCH)
    recs = [Record("op_overhead", {"op": op, "ops_per_sample": 100}, noisy(LAUNCH))
            for op in ("add", "mul", "topk")]
    recs += [Record("gemm", {"dtype": "fp32", "m": m, "k": k, "n": n},
                    noisy(float(gemm_fit.predict(dev, "fp32", [(1, 0.1), (1024, 0.9)], m, k, n)[0])))
             for k, n in ((512, 768), (384, 512), (1024, 2048)) for m in (1, 16, 256, 1024)]
    if with_ffn:
        mem = cpu.memory.bandwidth_bytes_per_s * cpu.efficiency.memory_bandwidth.at(1.0)
        ffn_dev = gemm_fit.GemmDevice({"fp32": peak}, 1, 1, cpu.compute.gemm_tile_n,
                                      float(mem), LAUNCH)
        stream = {"fp32": ffn_fit.Streaming(float(mem), 1.0)}
        recs += ffn_records(ffn_dev, stream, noise=0.0)
    facts = {"device_type": "cpu", "torch_threads": 1, "cpu_model": "Test CPU"}
    return Measurements(recs, {"device_facts": facts, "date": "2026-01-01T00:00:00+00:00"}, "x")


def test_calibrate_takes_the_layer_ffn_table_and_the_profile_reproduces_the_phase(tmp_path):
    doc = calibrate(_measurements(True), load_profile("cpu"), Options(name="t", base_ref="cpu"))
    gemm = doc["efficiency"]["gemm"]
    assert "expert FFN" in gemm["note"]
    fq = doc["fit_quality"]
    assert fq["gemm_layer_ffn"]["fp32"]["in_sample"]["mean_abs_pct"] < 1
    assert fq["dense_gemm_table_on_layer_ffn"]["fp32"]["bias_pct"] < -5  # dense 0.9 is optimistic
    path = tmp_path / "t.yaml"
    write_profile(doc, path, [])
    # uniform routing, 1024 tokens x top-2 over 8 experts: every expert gets exactly 256 rows
    # in expectation, so the predicted phases are the FFN model at counts [256] * 8 / [1024]
    res = predict("mixtral-8x7b", str(path), 1024, hidden=512, expert_ffn=384, experts=8,
                  top_k=2, shared_experts=1, shared_expert_ffn=384, weight_dtype="fp32",
                  activation_dtype="fp32", dispatch_dtype="fp32", combine_dtype="fp32")
    hw = load_profile(path)
    dev = gemm_fit.GemmDevice(hw.compute.peak_flops_per_s, hw.compute.units,
                              hw.compute.gemm_tile_m, hw.compute.gemm_tile_n,
                              hw.memory.bandwidth_bytes_per_s
                              * float(hw.efficiency.memory_bandwidth.at(1.0)),
                              hw.compute.launch_overhead_s)
    stream = ffn_fit.streaming(doc["efficiency"].get("phases"), hw.memory.bandwidth_bytes_per_s,
                               float(hw.efficiency.memory_bandwidth.at(1.0)), ["fp32"],
                               hw.efficiency.phases.kernels["activation"])["fp32"]
    eff = lambda x: hw.efficiency.gemm.at(x, "fp32")  # noqa: E731
    routed = ffn_fit.ffn_terms(dev, stream, "fp32", [256] * 8, 512, 384, 3,
                               hw.compute.grouped_gemm, eff)["time_s"]
    shared = ffn_fit.ffn_terms(dev, stream, "fp32", [1024], 512, 384, 3,
                               hw.compute.grouped_gemm, eff)["time_s"]
    assert res.breakdown_s["experts"] == pytest.approx(routed, rel=1e-6)
    assert res.breakdown_s["shared_experts"] == pytest.approx(shared, rel=1e-6)


def test_without_layer_records_the_dense_table_is_kept():
    doc = calibrate(_measurements(False), load_profile("cpu"), Options(name="t", base_ref="cpu"))
    assert "dense GEMM" in doc["efficiency"]["gemm"]["note"]
    assert "gemm_layer_ffn" not in doc["fit_quality"]


def test_measured_ffn_records_are_valid():
    """The microbenchmark on this CPU at a tiny shape: both kinds, counts that add up."""
    import torch

    from moesim.harness.microbench.common import Context
    from moesim.harness.microbench.layer import measure_layer_ffn
    from moesim.harness.timing import BenchConfig

    ctx = Context(torch.device("cpu"), BenchConfig(warmup=1, repeats=3, min_repeats=3), 1 << 16)
    recs = measure_layer_ffn(ctx, "fp32", 8, 32, 32, 4, 2)
    assert [r.kind for r in recs] == ["layer_experts", "layer_shared_experts"]
    assert sum(recs[0].params["counts"]) == 16 and recs[1].params["counts"] == [8]
    assert recs[0].params["layer_copies"] >= 2  # weights rotated past the 64 KiB "cache"
    for r in recs:
        assert r.stats.median_s > 0
        assert record_from_dict(r.to_dict(), "r") == r


# --- ranks sharing cores ------------------------------------------------------------------------

def test_shared_cores_hand_worked():
    """4 ranks on 2 cores (speedup 2). Shared-profile stage times 8, 2, 2, 4 ms (work 4, 1, 1,
    2 ms of one core): the heaviest rank alone needs 4 ms, all the work 8 ms over 2 cores = 4 ms
    -> 4 ms. Symmetric 3, 3, 3, 3 stays 3 (the shared profile already prices full sharing)."""
    t = np.array([[8.0, 2.0, 2.0, 4.0], [3.0, 3.0, 3.0, 3.0]])
    got = shared_cores(t, 2.0)
    assert got[0].max() == pytest.approx(4.0)
    assert np.allclose(got[1], 3.0)
    assert np.all(got <= t)
    assert shared_cores(t, 1.0) is t  # a dedicated device: unchanged


@pytest.mark.parametrize("seed", range(5))
def test_shared_cores_bounds(seed):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.1, 10.0, size=(50, 4))
    k = rng.uniform(1.0, 3.0)
    got = shared_cores(t, k).max(axis=1)
    assert np.all(got <= t.max(axis=1) + 1e-12)          # never slower than the share model
    assert np.all(got >= t.mean(axis=1) - 1e-12)         # all work over all cores
    assert np.all(got >= t.max(axis=1) / k - 1e-12)      # the heaviest rank at full speed
