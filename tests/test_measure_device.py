"""One measurement path for CPU and GPU: the device decides backend, timer and facts.

These run on the CPU: the choices are pure functions of the device spec, checked for ``cuda``
without a GPU; the measured layer runs through the same worker code with the device named
explicitly. Nobody has run the CUDA branch on a GPU yet (no GPU was lent to this session).
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from moesim.harness.machine import mismatches
from scipy import stats

from moesim import predict_many
from moesim.config import ConfigError, load_profile
from moesim.core.routing import inclusion_probs
from moesim.harness.device import (
    measuring_device,
    plan_for,
    profile_device_type,
)
from moesim.harness.timing import CudaEventTimer, PhaseTimer, WallTimer, device_sync, timer_for
from moesim.measure.cases import MeasureSettings, resolve_device
from moesim.measure.forced import sample_inclusion_ids

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("spec, backend, timer, facts, rank1", [
    ("cpu", "gloo", "wall", "cpu", "cpu"),
    ("cuda", "nccl", "cuda-sync", "nvml", "cuda:1"),
    ("CUDA:3", "nccl", "cuda-sync", "nvml", "cuda:1")])
def test_backend_timer_and_facts_follow_the_device(spec, backend, timer, facts, rank1):
    plan = plan_for(spec)
    assert (plan.backend, plan.timer, plan.facts) == (backend, timer, facts)
    assert plan.rank_device(1) == rank1                   # one GPU per rank, by LOCAL_RANK
    assert plan.pin_cores == plan.host_malloc == (plan.device_type == "cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        plan_for("tpu")


def test_phase_and_bench_timers_synchronise_only_a_gpu():
    sync = device_sync(torch.device("cuda", 0))
    assert isinstance(sync, functools.partial) and sync.func is torch.cuda.synchronize
    assert sync.args == (torch.device("cuda", 0),)
    assert device_sync("cpu") is None and device_sync(None) is None
    assert PhaseTimer("cuda:0").sync.func is torch.cuda.synchronize
    assert isinstance(timer_for("cuda:0"), CudaEventTimer)
    assert isinstance(timer_for("cpu"), WallTimer)


def test_profiles_name_their_device_kind(tmp_path):
    assert profile_device_type(load_profile("cpu")) == "cpu"
    assert profile_device_type(load_profile("h100-sxm")) == "cuda"
    assert profile_device_type(load_profile("cpu-epyc-zen4-1t")) == "cpu"          # facts
    assert profile_device_type(load_profile("cpu-epyc-zen4-1t-shared2")) == "cpu"  # base
    gpu = tmp_path / "gpu-x.yaml"
    gpu.write_text("name: gpu-x\ndescription: t\nbase: h100-sxm\nkind: calibrated\n"
                   "provenance: {device_facts: {device_type: cuda, gpu_name: H100}}\n")
    assert profile_device_type(load_profile(gpu)) == "cuda"


def test_a_device_other_than_the_profiles_is_refused():
    assert measuring_device(None, {"cpu": "cpu", "cpu-epyc-zen4-1t": "cpu"}) == "cpu"
    assert measuring_device("cuda:1", {"h100-sxm": "cuda"}) == "cuda:1"
    with pytest.raises(ConfigError, match="refusing to measure on 'cpu'.*'h100-sxm' .cuda."):
        measuring_device("cpu", {"h100-sxm": "cuda"})
    with pytest.raises(ConfigError, match="--device"):
        measuring_device(None, {"cpu": "cpu", "h100-sxm": "cuda"})
    with pytest.raises(ConfigError, match="refusing to measure on 'cuda'"):
        resolve_device(MeasureSettings(device="cuda"), ["cpu"])
    if not torch.cuda.is_available():                     # a GPU profile and no GPU here
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            resolve_device(MeasureSettings(), ["h100-sxm"])


def test_cpu_model_of_the_profile_is_checked():
    """measure warns through the one machine check (harness.machine.mismatches), with the facts a
    derived profile inherits from its base."""
    class Profile:
        name, provenance = "cpu-a", {}
    zen4 = {"device_type": "cpu", "cpu_model": "AMD EPYC 7B13", "cpu_family_model": "25/17"}
    xeon = {"device_type": "cpu", "cpu_model": "Intel Xeon", "cpu_family_model": "6/143"}
    lines = mismatches(Profile(), xeon, recorded=zen4)
    assert len(lines) == 2 and "'AMD EPYC 7B13'" in lines[0] and "'Intel Xeon'" in lines[0]
    assert mismatches(Profile(), zen4, recorded=zen4) == []
    assert mismatches(Profile(), xeon, recorded={}) == []  # a datasheet profile: nothing to compare


def test_settings_key_keeps_cpu_keys_and_separates_gpu_measurements():
    cpu, gpu = MeasureSettings(device="cpu"), MeasureSettings(device="cuda:0")
    assert "device" not in cpu.key_fields(1)
    assert cpu.key_fields(1) == MeasureSettings().key_fields(1)
    assert gpu.key_fields(1)["device"] == "cuda"
    with pytest.raises(ConfigError, match="unknown device"):
        MeasureSettings(device="gpu")


TINY = {"model": "custom", "hardware": "cpu", "hidden": 16, "expert_ffn": 16, "experts": 32,
        "top_k": 4, "weight_dtype": "fp32", "activation_dtype": "fp32", "dispatch_dtype": "fp32",
        "combine_dtype": "fp32", "routing": "zipf:1.2", "ep": 1, "tokens": 4096, "seed": 3}


def _pearson(counts: np.ndarray, q: np.ndarray, tokens: int) -> float:
    """sum_e (c_e - T q_e)^2 / (T q_e (1 - q_e)): each term has mean exactly 1 when
    c_e ~ Binomial(T, q_e) (experts with 0 < q_e < 1)."""
    ok = (q > 0) & (q < 1)
    return float(np.sum((counts[ok] - tokens * q[ok]) ** 2 / (tokens * q[ok] * (1 - q[ok]))))


def _plackett_luce_ids(q: np.ndarray, tokens: int, top_k: int, seed: int) -> np.ndarray:
    """The old second definition of "zipf:S" forcing (Gumbel top-k on q): flatter than q."""
    keys = np.log(q) + np.random.default_rng(seed).gumbel(size=(tokens, q.size))
    return np.argpartition(-keys, top_k - 1, axis=1)[:, :top_k]


def test_measured_layer_routes_with_predicts_inclusion_probabilities(tmp_path):
    """The measured layer's per-expert counts against predict's q (Pearson statistic over the
    experts with 0 < q < 1, threshold the chi2(32) 1e-4 quantile, ~66). Sample size: for
    zipf:1.2 over 32 experts with top-4, q caps the hottest expert at 1 and gives the next
    0.622; Gumbel top-k on q (the old second definition) includes them with 0.727 and 0.560.
    At 4,096 tokens that second expert's gap is 8 standard deviations of its Binomial(4096,
    0.622) count (sigma 31) and the old rule's expected statistic ~330, five times the
    threshold: the test tells the two definitions apart, and does reject the old one."""
    from moesim.measure.journal import Journal
    from moesim.measure.runner import inprocess_launcher
    from moesim.measure.scenario_hook import run_scenario_measurements

    table = predict_many(pd.DataFrame([TINY]))
    settings = MeasureSettings(repeats=1, warmup=0, cache_bytes=0, device="cpu",
                               max_foreign=float("inf"))  # routing, not timing, is checked
    run_scenario_measurements(None, table, tmp_path, settings=settings,
                              launcher=inprocess_launcher())
    [record] = Journal.in_folder(tmp_path).records()
    assert record["device"] == "cpu" and record["backend"] is None       # one rank: no group
    q = inclusion_probs("zipf:1.2", 32, 4, seed=3)
    counts = np.array(record["slot_counts"])                  # contiguous, one rank: by expert
    assert counts.sum() == 4096 * 4
    limit = stats.chi2.ppf(1 - 1e-4, df=32)
    assert _pearson(counts, q, 4096) < limit
    old = np.bincount(_plackett_luce_ids(q, 4096, 4, seed=1).ravel(), minlength=32)
    assert _pearson(old, q, 4096) > limit


def test_sampler_inclusion_matches_q_for_every_routing_kind():
    for routing, top_k in (("uniform", 1), ("zipf:1.5", 4), ("lognormal:1.0", 8)):
        q = inclusion_probs(routing, 64, top_k, seed=5)
        ids = sample_inclusion_ids(q, 20_000, top_k, seed=2)
        counts = np.bincount(ids.ravel(), minlength=64)
        assert _pearson(counts, q, 20_000) < stats.chi2.ppf(1 - 1e-4, df=64), routing


def test_gpu_scenario_resolves_to_cuda_and_is_refused_on_the_cpu():
    """validation-gpu's rows (a GPU profile in place of gpu-calibrated) are measured on cuda,
    with keys of their own; naming the CPU is refused before any work."""
    from pathlib import Path

    from moesim.measure.cases import build_case
    from moesim.scenarios import expand, scenario_from_text

    text = (Path(__file__).resolve().parents[1] / "scenarios" / "validation-gpu.yaml").read_text()
    rows = expand(scenario_from_text(text.replace("gpu-calibrated", "h100-sxm")))
    with pytest.raises(ConfigError, match="refusing to measure on 'cpu'"):
        resolve_device(MeasureSettings(device="cpu"), list(rows["hardware"]))
    row = rows.to_dict(orient="records")[0]
    gpu, cpu = (build_case(row, MeasureSettings(device=d)) for d in ("cuda", "cpu"))
    assert gpu["device"] == "cuda" and cpu["device"] == "cpu" and gpu["key"] != cpu["key"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPU")
def test_gpu_runbook_refuses_to_run_without_a_gpu():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_validation.sh"
    proc = subprocess.run(["bash", str(script), "measure"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "refusing to time the CPU" in proc.stderr or "sees no CUDA device" in proc.stderr
