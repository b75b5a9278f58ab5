"""Harness: statistics, the timing primitive (fake clock), device parsing, records, plans and
a smoke run of each microbenchmark on the CPU."""
from __future__ import annotations

import json
from functools import partial

import pytest

from moesim.config import ConfigError
from moesim.harness.records import (
    FORMAT,
    Measurements,
    load_measurements,
    merge,
    record_from_dict,
    write_tables,
)
from moesim.harness.stats import Stats, non_monotone
from moesim.harness.timing import (
    BenchConfig,
    WallTimer,
    bench,
    planned_repeats,
    rotation_count,
    sample,
)

# --- statistics -----------------------------------------------------------------------------


def test_stats_from_samples():
    s = Stats.from_samples([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.n, s.median_s, s.min_s, s.max_s, s.q1_s, s.q3_s) == (5, 3.0, 1.0, 5.0, 2.0, 4.0)
    assert s.iqr_s == 2.0 and s.rel_iqr == pytest.approx(2 / 3)
    assert s.p10_s == pytest.approx(1.4) and s.p90_s == pytest.approx(4.6)
    assert s.scaled(0.5).median_s == 1.5
    assert Stats.from_dict(s.to_dict()) == s


@pytest.mark.parametrize("bad", [[], [1.0, -1.0], [float("nan")]])
def test_stats_reject_bad_samples(bad):
    with pytest.raises(ValueError):
        Stats.from_samples(bad)


def test_stats_from_dict_names_the_field():
    d = Stats.from_samples([1.0, 2.0]).to_dict()
    d["median_s"] = "fast"
    with pytest.raises(ConfigError, match=r"r\[0\].stats.median_s.*finite number"):
        Stats.from_dict(d, where="r[0].stats", file="x.json")


def test_non_monotone_flags_points_slower_than_a_larger_size():
    assert non_monotone([1, 2, 4, 8], [1.0, 5.0, 2.0, 3.0]) == [1]
    assert non_monotone([1, 2, 4], [1.0, 2.0, 3.0]) == []


# --- timing primitive with a fake clock -------------------------------------------------------

def fake_clock(durations):
    """A clock whose successive (start, end) reads are ``durations`` apart."""
    reads, now = [], 0.0
    for d in durations:
        reads += [now, now + d]
        now += d + 1.0
    return partial(next, iter(reads))


def test_bench_warmup_budget_rotation_and_dropped_first_sample():
    seen = []
    # warm-up 10, 2, 3 -> fastest after the first = 2 -> floor(7 / 2) = 3 repeats (+1 dropped)
    timer = WallTimer(clock=fake_clock([10, 2, 3, 100, 4, 5, 6]))
    cfg = BenchConfig(warmup=3, repeats=10, min_repeats=2, budget_s=7.0, retries=0)
    stats = bench(seen.append, ["a", "b", "c"], cfg, timer)
    assert seen == ["a", "b", "c", "a", "b", "c", "a"]
    assert (stats.n, stats.median_s, stats.min_s, stats.max_s) == (3, 5.0, 4.0, 6.0)
    assert stats.attempts == 1


def test_bench_measures_again_when_the_spread_is_wide_and_keeps_the_quietest():
    noisy, quiet = [1, 9, 1, 9, 1], [2, 2, 2, 2, 2]
    timer = WallTimer(clock=fake_clock([1, 1] + noisy + [1, 1] + quiet))
    cfg = BenchConfig(warmup=2, repeats=4, min_repeats=4, budget_s=100.0, retries=3,
                      max_rel_iqr=0.25)
    stats = bench(lambda x: None, [0], cfg, timer)
    assert stats.attempts == 2 and stats.median_s == 2.0 and stats.iqr_s == 0.0


def test_sample_runs_before_hook_untimed_and_syncs_around_each_call():
    events = []
    timer = WallTimer(clock=fake_clock([1] * 6), sync=lambda: events.append("sync"),
                      before=lambda: events.append("barrier"))
    cfg = BenchConfig(warmup=1, repeats=2, min_repeats=2, budget_s=1.0)
    out = sample(lambda x: events.append("call"), [0], cfg, timer)
    assert out.tolist() == [1.0, 1.0]
    assert events[:4] == ["barrier", "sync", "call", "sync"]


def test_planned_repeats_and_rotation():
    cfg = BenchConfig(warmup=1, repeats=20, min_repeats=5, budget_s=1.0)
    assert planned_repeats(0.5, cfg) == 5 and planned_repeats(0.01, cfg) == 20
    assert planned_repeats(0.1, cfg) == 10
    assert rotation_count(1 << 20, 32 << 20) == 64
    assert rotation_count(1 << 30, 32 << 20) == 2
    assert rotation_count(1, 32 << 20, max_sets=8) == 8


def test_bench_config_validates():
    with pytest.raises(ValueError):
        BenchConfig(warmup=0)
    with pytest.raises(ValueError):
        BenchConfig(repeats=3, min_repeats=5)


# --- records and their files ------------------------------------------------------------------

def _rec(kind="gemm", **params) -> dict:
    base = {"gemm": {"dtype": "fp32", "m": 4, "k": 8, "n": 16}}.get(kind, {})
    return {"kind": kind, "params": {**base, **params},
            "stats": Stats.from_samples([1e-3, 2e-3, 3e-3]).to_dict()}


def test_measurements_round_trip(tmp_path):
    meas = Measurements([record_from_dict(_rec(), "r")], {"date": "today"})
    path = meas.write(tmp_path / "m.json")
    back = load_measurements(path)
    assert back.records == meas.records and back.provenance == {"date": "today"}
    csvs = write_tables(back, tmp_path / "csv")
    assert [p.name for p in csvs] == ["gemm.csv"]
    assert "median_s" in csvs[0].read_text().splitlines()[0]
    both = merge([back, back])
    assert len(both.records) == 2 and both.provenance["merged_from"] == [str(path)] * 2


@pytest.mark.parametrize("doc, match", [
    ("{not json", r"m.json:1: invalid JSON"),
    ("[]", r"m.json: expected a JSON object"),
    (json.dumps({"format": "other"}), r"field 'format'"),
    (json.dumps({"format": FORMAT, "records": [_rec(kind="magic")]}),
     r"field 'records\[0\].kind': unknown record kind 'magic'"),
    (json.dumps({"format": FORMAT, "records": [_rec(m=0)]}),
     r"field 'records\[0\].params.m': expected a integer >= 1"),
    (json.dumps({"format": FORMAT, "records": [{**_rec(), "stats": {"n": 3}}]}),
     r"field 'records\[0\].stats.median_s'"),
    (json.dumps({"benchmarks": [{"name": "x", "extra_info": {}}]}),
     r"field 'benchmarks\[0\].extra_info.moesim_records'"),
])
def test_malformed_benchmark_json_names_file_and_field(tmp_path, doc, match):
    path = tmp_path / "m.json"
    path.write_text(doc)
    with pytest.raises(ConfigError, match=match):
        load_measurements(path)


def test_missing_json_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read benchmark JSON"):
        load_measurements(tmp_path / "nope.json")


def test_pytest_benchmark_json_is_read(tmp_path):
    doc = {"machine_info": {"moesim_provenance": {"device_facts": {"device_type": "cpu"}}},
           "benchmarks": [{"name": "test_gemm", "extra_info": {"moesim_records": [_rec()]}}],
           "datetime": "2026-01-01", "version": "5.0"}
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(doc))
    meas = load_measurements(path)
    assert len(meas.of("gemm")) == 1
    assert meas.provenance["device_facts"]["device_type"] == "cpu"


# --- plan (no torch) --------------------------------------------------------------------------

def test_quick_cpu_plan_uses_preset_shapes_and_caps_flops():
    from moesim.harness.microbench.plan import expert_shapes, make_plan

    plan = make_plan("cpu", True, ("fp32",))
    keys = {(s.k, s.n) for s in plan.gemm_shapes}
    assert {(2048, 1536), (768, 2048)} <= keys  # qwen3-30b-a3b gate|up and down
    assert all(2 * m * s.k * s.n <= plan.max_gemm_flops or m == 1
               for s, m in plan.gemm_points("fp32"))
    assert expert_shapes(8, 4, True, "x")[0].n == 8 and expert_shapes(8, 4, False, "x")[0].n == 4
    assert plan.a2a_world_sizes == (2, 4) and min(plan.a2a_bytes) == 1024


# --- device ------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_missing_cuda_device_is_a_config_error():
    from moesim.harness.device import parse_device

    with pytest.raises(ConfigError, match=r"field '--device': 'cuda:0' requested but torch"):
        parse_device("cuda:0")


def test_device_parsing_and_facts():
    from moesim.harness.device import device_facts, parse_device

    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        parse_device("tpu")
    facts = device_facts(parse_device("cpu"))
    assert facts["device_type"] == "cpu" and facts["torch"] == torch.__version__
    assert facts["torch_threads"] >= 1 and "cpu_model" in facts and "moesim" in facts


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_events_timer_and_nvml_facts():
    from moesim.harness.device import device_facts, parse_device
    from moesim.harness.timing import CudaEventTimer

    dev = parse_device("cuda:0")
    x = torch.randn(1024, 1024, device=dev)
    stats = bench(lambda a: a @ a, [x], BenchConfig(warmup=2, repeats=5, min_repeats=5),
                  CudaEventTimer(dev))
    assert 0 < stats.median_s < 1
    facts = device_facts(dev)
    assert "gpu_name" in facts or "nvml" in facts


# --- microbenchmarks on the CPU (tiny) -------------------------------------------------------

TINY = BenchConfig(warmup=1, repeats=3, min_repeats=3, budget_s=0.01, retries=0)


@pytest.fixture
def ctx():
    from moesim.harness.microbench.common import Context

    return Context(torch.device("cpu"), TINY, cache_bytes=1 << 16)


def test_dense_and_grouped_gemm_records(ctx):
    from moesim.harness.microbench.gemm import measure_dense, measure_grouped
    from moesim.harness.microbench.plan import GemmShape

    shape = GemmShape(64, 32, "test")
    recs = measure_dense(ctx, "fp32", shape, [1, 8])
    assert [r.params["m"] for r in recs] == [1, 8]
    assert recs[1].params["flops"] == 2 * 8 * 64 * 32 and recs[0].params["sets"] >= 2
    grouped = measure_grouped(ctx, "fp32", 4, 2, shape)
    impls = {r.params["impl"] for r in grouped}
    assert "loop" in impls and ("grouped" in impls) == hasattr(torch, "_grouped_mm")
    for r in recs + grouped:
        record_from_dict(r.to_dict(), "r")  # what the suite writes, the reader accepts


def test_layer_ops_copy_and_overhead(ctx):
    from moesim.harness.microbench.ops import (
        measure_copy,
        measure_layer_ops,
        measure_op_overhead,
        permute,
        router,
        unpermute,
    )

    recs = measure_layer_ops(ctx, "fp32", 6, 16, 8, 4, 2)
    assert [r.kind for r in recs] == ["router", "permute", "unpermute", "activation"]
    copy = measure_copy(ctx, 1 << 16)
    assert copy.params["bytes"] == 2 * (1 << 16)
    ops = measure_op_overhead(ctx, ops_per_sample=5)
    assert {r.params["op"] for r in ops} >= {"add", "matmul", "index_add_"}
    # per-op seconds are measured, positive and finite (their size is machine load, not a test)
    assert all(0 < r.stats.median_s < float('inf') for r in ops)
    # the kernels are a correct MoE round trip: unpermute(permute(x)) with weights 1/k = x
    x, w = torch.randn(5, 8), torch.randn(8, 4)
    ids, weights = router(x, w, 2)
    x_sorted, _, token_of, counts = permute(x, ids, 4)
    assert int(counts.sum()) == 10
    back = unpermute(x_sorted, token_of, torch.full((10,), 0.5), 5)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(weights.sum(-1), torch.ones(5))
