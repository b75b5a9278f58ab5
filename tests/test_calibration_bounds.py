"""Calibration that carries over: fits stay within physical bounds and say when they rest on
one; the written profile names the machine measured and the threads it ran with; a profile of
another CPU (or thread count) is told apart from the machine at hand."""
from __future__ import annotations

import numpy as np
import pytest

from moesim.calibration import stream_fit
from moesim.harness import machine
from moesim.calibration.calibrate import Options, calibrate
from moesim.calibration.fit import fit_alpha_beta
from moesim.config import load_profile
from moesim.harness.records import Measurements, Record
from moesim.harness.stats import Stats

LAUNCH = 3.2e-6
COPY = 20e9  # bytes/s (read + write) of the large copy


def stats(t: float) -> Stats:
    return Stats.from_samples(np.full(5, t))


def test_bounded_alpha_beta_respects_both_bounds():
    x = np.array([1e4, 1e5, 1e6, 1e7])
    t = 1e-3 + x / 1e9
    free = fit_alpha_beta(x, t)
    assert free.alpha_s == pytest.approx(1e-3, rel=1e-6) and free.rate == pytest.approx(1e9)
    capped = fit_alpha_beta(x, t, alpha_max_s=1e-4, rate_min=2e9, rate_max=8e9)
    assert capped.alpha_s <= 1e-4 * (1 + 1e-9)
    assert 2e9 * (1 - 1e-9) <= capped.rate <= 8e9 * (1 + 1e-9)
    with pytest.raises(ValueError, match="empty bounds"):
        fit_alpha_beta(x, t, rate_min=5e9, rate_max=1e9)


def zen3_like_unpermute() -> list[Record]:
    """Issue 12's pathology: times nearly flat over token counts at tens of ms, so a free fit
    puts ~15,000 launches into the intercept and a bandwidth far below the copy rate."""
    out = []
    for tokens, t in ((1, 0.050), (16, 0.0505), (128, 0.052), (1024, 0.066)):
        nbytes = tokens * 3 * 512 * 4.0 + tokens * 512 * 4.0
        out.append(Record("layer_unpermute", {"dtype": "fp32", "tokens": tokens, "hidden": 512,
                                              "experts": 12, "top_k": 3, "bytes": nbytes},
                          stats(t)))
    return out


def test_absurd_fixed_costs_are_bounded_and_reported():
    recs = zen3_like_unpermute()
    fits = stream_fit.fixed_costs(recs, LAUNCH, COPY)
    fit = fits["unpermute/fp32"]
    assert fit["unbounded"]["implied_launches"] > 10_000  # what the free fit makes of it
    assert fit["implied_launches"] <= stream_fit.MAX_PHASE_LAUNCHES
    assert fit["bytes_per_s"] >= stream_fit.MIN_COPY_FRACTION * COPY * (1 - 1e-9)
    assert "fixed_s_max" in fit["bound_hit"]
    lines = stream_fit.bound_violations(fits)
    assert any(line.startswith("unpermute/fp32: unbounded fit fixed") for line in lines)


def test_fixed_cost_never_exceeds_the_fastest_measurement():
    recs = zen3_like_unpermute()[:2]  # 50 ms and 50.5 ms: the bound is the 50 ms point
    bounds = stream_fit.phase_bounds("unpermute", [r.stats.median_s for r in recs], 1.0, COPY)
    assert bounds["fixed_s_max"] == pytest.approx(0.050)
    assert "bytes_per_s_min" not in stream_fit.phase_bounds("router", [1.0], LAUNCH, COPY)


def run_records(stream_bytes_per_s: float) -> Measurements:
    recs = [Record("op_overhead", {"op": op, "ops_per_sample": 100}, stats(LAUNCH))
            for op in ("add", "mul", "topk")]
    for size in (64 << 20, 256 << 20):
        recs.append(Record("copy", {"dtype": "fp32", "bytes": 2.0 * size, "size_bytes": size},
                           stats(LAUNCH + 2.0 * size / COPY)))
    for kind in stream_fit.STREAM_KINDS:
        for tokens in (16, 256, 4096):
            nbytes = tokens * 2 * 1024 * 4.0
            t = stream_fit.MODEL_LAUNCHES[kind] * LAUNCH + nbytes / stream_bytes_per_s
            recs.append(Record(kind, {"dtype": "fp32", "tokens": tokens, "hidden": 1024,
                                      "experts": 8, "top_k": 2, "ffn": 1024, "bytes": nbytes},
                               stats(t)))
    facts = {"device_type": "cpu", "cpu_model": "AMD EPYC 7B13", "cpu_family_model": "25/1",
             "cpu_flags": ["avx2", "fma"], "logical_cpus": 2, "torch_threads": 2,
             "torch_cpu_capability": "AVX2"}
    return Measurements(recs, {"device_facts": facts, "torch_threads": 2, "command": "test"})


def test_memory_bandwidth_is_not_left_far_below_the_copy_rate():
    doc = calibrate(run_records(4.2e9), load_profile("cpu"), Options(name="x", base_ref="cpu"))
    mem = doc["fit_quality"]["memory"]
    assert mem["stream_bytes_per_s"] == pytest.approx(4.2e9, rel=0.01)
    assert mem["chosen_bytes_per_s"] >= stream_fit.MIN_STREAM_OF_COPY * COPY * 0.99
    assert any(v.startswith("memory: layer streaming rate 4.2 GB/s")
               for v in doc["fit_quality"]["bound_violations"])
    ok = calibrate(run_records(18e9), load_profile("cpu"), Options(name="x", base_ref="cpu"))
    assert not any(v.startswith("memory") for v in ok["fit_quality"].get("bound_violations", []))


def test_profile_describes_the_machine_measured_not_the_base():
    doc = calibrate(run_records(18e9), load_profile("cpu"), Options(name="x", base_ref="cpu"))
    text = doc["description"]
    assert "AMD EPYC 7B13" in text and "25/1" in text and "avx2 fma" in text
    assert "2 torch thread(s)" in text and "AVX-512" not in text and "Zen 4" not in text
    assert doc["provenance"]["torch_threads"] == 2


class FakeProfile:
    def __init__(self, facts, threads):
        self.name = "cpu-test"
        self.provenance = {"device_facts": facts, "torch_threads": threads}


ZEN4 = {"device_type": "cpu", "cpu_model": "AMD EPYC", "cpu_family_model": "25/17",
        "cpu_flags": ["avx2", "fma", "avx512f", "avx512_bf16"]}
ZEN3 = {"device_type": "cpu", "cpu_model": "AMD EPYC", "cpu_family_model": "25/1",
        "cpu_flags": ["avx2", "fma"]}


def test_mismatch_names_what_differs():
    profile = FakeProfile(ZEN4, 1)
    assert machine.mismatches(profile, ZEN4, threads_per_rank=1) == []
    lines = machine.mismatches(profile, ZEN3, threads_per_rank=2)
    assert len(lines) == 3  # family/model, flags, threads
    assert "cpu_family_model '25/17'" in lines[0] and "calibrate this machine first" in lines[0]
    assert "avx512_bf16" in lines[1]
    assert "1 torch thread(s)" in lines[2] and "2 per rank" in lines[2]
    assert machine.mismatches(FakeProfile({}, None), ZEN3) == []  # datasheet profile: silent
    committed = load_profile("cpu-epyc-zen4-1t")  # recorded before cpu_flags existed
    assert machine.recorded_threads(committed) == 1
    zen3_vm = {"device_type": "cpu", "cpu_model": "AMD EPYC", "torch_cpu_capability": "AVX2"}
    lines = machine.mismatches(committed, zen3_vm, threads_per_rank=1)
    assert len(lines) == 1 and "torch_cpu_capability 'AVX512'" in lines[0]


def test_arithmetic_intensity_hand_worked():
    from moesim.calibration.ffn_fit import intensity

    # 1 row, hidden 2, width 3, 3 matrices, 2-byte elements: 36 FLOPs over 2 * (18 + 13) bytes
    assert float(intensity(1, 2, 3, 3, 2.0)) == pytest.approx(36.0 / 62.0)
    # many rows: weights amortised, intensity -> 2 m h f / (a (2 h + m f))
    assert float(intensity(1e12, 2, 3, 3, 2.0)) == pytest.approx(36.0 / 26.0, rel=1e-6)
