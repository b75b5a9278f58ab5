"""``moesim measure``: resumable runs, measured columns and errors, forced routing under EP."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from moesim import predict_many
from moesim.config import ConfigError
from moesim.core.placement import build_placement
from moesim.core.routing import inclusion_probs
from moesim.measure.cases import MeasureSettings, build_case
from moesim.measure.forced import sample_inclusion_ids
from moesim.measure.journal import JOURNAL_NAME, LEGACY_NAME, Journal
from moesim.measure.runner import (
    MeasureError,
    best_records,
    clean_counts,
    inprocess_launcher,
)
from moesim.measure.scenario_hook import (
    attach,
    error_band,
    mape_table,
    run_scenario_measurements,
)

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from moesim.measure.combine import combine_ranks

TINY = {"model": "custom", "hardware": "cpu", "hidden": 16, "expert_ffn": 16, "experts": 8,
        "top_k": 2, "weight_dtype": "fp32", "activation_dtype": "fp32", "dispatch_dtype": "fp32",
        "combine_dtype": "fp32", "routing": "uniform", "ep": 1}
FAST = MeasureSettings(repeats=3, warmup=1, threads=1, cache_bytes=0)


def _table(rows: list[dict]) -> pd.DataFrame:
    return predict_many(pd.DataFrame([{**TINY, **r} for r in rows]))


# --- forced routing ------------------------------------------------------------------------

@pytest.mark.parametrize("routing, top_k", [("uniform", 1), ("zipf:1.5", 4), ("zipf:3", 8)])
def test_forced_ids_have_the_cost_models_inclusion_probabilities(routing, top_k):
    q = inclusion_probs(routing, 32, top_k, seed=3)
    tokens = 20_000
    ids = sample_inclusion_ids(q, tokens, top_k, seed=1)
    assert ids.shape == (tokens, top_k)
    assert not np.any(np.diff(np.sort(ids, axis=1), axis=1) == 0)        # distinct per token
    counts = np.bincount(ids.ravel(), minlength=32)
    sigma = np.sqrt(tokens * q * (1 - q)) + 1e-9                          # Binomial(T, q_e)
    assert np.all(np.abs(counts - tokens * q) <= 5 * sigma + 1e-6)


def test_forced_ids_reject_bad_q():
    with pytest.raises(ValueError, match="sum"):
        sample_inclusion_ids(np.full(8, 0.5), 4, 2, seed=0)


# --- records -------------------------------------------------------------------------------

def test_layer_time_runs_from_the_last_start_to_the_last_end():
    phases = ("router", "permute", "dispatch", "experts", "combine", "unpermute", "shared_experts")

    def rank(spans, experts, dispatch):
        ph = {p: [0.0, 0.0] for p in phases}
        ph["experts"], ph["dispatch"] = experts, dispatch
        return {"total_s": [9.0, 9.0], "span_s": spans, "phases_s": ph, "slot_counts": [1],
                "threads": 1, "layer_copies": 1}
    # rank 1 leaves the barrier 1 s late in repeat 0; rank 0 waits for it in dispatch
    per_rank = [rank([(0.0, 5.0), (10.0, 14.0)], [1.0, 3.0], [4.0, 1.0]),
                rank([(1.0, 5.5), (10.0, 14.2)], [3.5, 1.0], [1.0, 3.2])]
    rec = combine_ranks({"key": "k", "repeats": 2, "warmup": 0}, per_rank)
    assert rec["total_s"] == pytest.approx([4.5, 4.2]) and rec["wall_s"] == [9.0, 9.0]
    assert rec["critical_rank"] == [1, 0]
    assert rec["phases_s"]["experts"] == [3.5, 3.0]
    assert rec["phases_s"]["dispatch"] == [1.0, 1.0]          # the exchange, not the wait


def test_exchange_runs_from_the_last_entry_to_the_last_exit():
    """Repeat 0: rank 0 enters the dispatch at 1.0 and sleeps; rank 1 enters at 2.0 and leaves at
    2.3 with its data; rank 0, woken late, leaves at 2.8 -> the exchange on the critical path is
    2.8 - 2.0 = 0.8 s (rank 1's own 0.3 s misses the wake-up). Combine: 0.5 s."""
    phases = ("router", "permute", "dispatch", "experts", "combine", "unpermute", "shared_experts")

    def rank(dispatch_marks, combine_marks, dispatch_s):
        ph = {p: [0.0] for p in phases}
        ph["dispatch"] = [dispatch_s]
        return {"total_s": [5.0], "span_s": [(0.0, 5.0)], "phases_s": ph, "slot_counts": [1],
                "threads": 1, "layer_copies": 1,
                "marks_s": {"dispatch": [dispatch_marks], "combine": [combine_marks]}}
    per_rank = [rank((1.0, 2.8), (3.0, 3.6), 1.8), rank((2.0, 2.3), (3.2, 3.7), 0.3)]
    rec = combine_ranks({"key": "k", "repeats": 1, "warmup": 0}, per_rank)
    assert rec["phases_s"]["dispatch"] == pytest.approx([0.8])
    assert rec["phases_s"]["combine"] == pytest.approx([0.5])


def test_old_partial_file_is_imported_with_torn_lines_repaired_or_dropped(tmp_path):
    """A record cut off by a kill is dropped; the next record appended onto the torn line
    (what the old resume did) is kept; importing twice adds nothing."""
    (tmp_path / LEGACY_NAME).write_text('{"key": "a", "x": 1}\n'
                                        '{"key": "b", "x"{"key": "c", "x": 3}\n'
                                        '{"key": "d", "x": 4}\n{"key": "e", "x"')
    journal = Journal.in_folder(tmp_path)
    assert [r["key"] for r in journal.records()] == ["a", "c", "d"]
    assert journal.dropped == 2
    assert Journal.in_folder(tmp_path).count() == 3                    # idempotent import


def test_journal_commits_whole_records_and_one_run_per_folder(tmp_path):
    journal = Journal(tmp_path / JOURNAL_NAME)
    journal.add({"key": "a", "total_s": [1.0]})
    journal.add({"key": "a", "total_s": [1.0]})                     # the same record: once
    assert journal.count() == 1
    with journal.locked():
        other = Journal(tmp_path / JOURNAL_NAME)
        with pytest.raises(ConfigError, match="another moesim measure .pid"):
            with other.locked():
                pass
    with Journal(tmp_path / JOURNAL_NAME).locked():                # released on exit
        pass


def test_committed_partial_files_still_load_with_their_rows(tmp_path):
    """The committed results keep their partial files; a journal imports them whole, and the
    kept record of every row of results.csv is there."""
    import shutil
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results"
    for name in ("validation-cpu", "overlap-cpu"):
        shutil.copy(results / name / LEGACY_NAME, tmp_path / LEGACY_NAME)
        journal = Journal.in_folder(tmp_path)
        assert journal.dropped == 0
        best = best_records(journal.records())
        table = pd.read_csv(results / name / "results.csv")
        assert set(table["measure_key"]) <= set(best)
        journal.close()
        (tmp_path / JOURNAL_NAME).unlink()


# --- cases ---------------------------------------------------------------------------------

def test_cases_use_the_cost_models_routing_and_placement():
    row = {**TINY, "experts": 16, "ep": 4, "routing": "zipf:1.2", "placement": "balanced",
           "seed": 5, "tokens": 8}
    case = build_case(row, FAST)
    q = inclusion_probs("zipf:1.2", 16, 2, 5)
    assert np.allclose(case["q"], q)
    assert case["placement"] == build_placement("balanced", 16, 4, q).as_lists()
    same = build_case({**row, "hardware": "h100-sxm"}, FAST)
    assert same["key"] == case["key"]                   # the profile does not change a measurement
    assert build_case(row, MeasureSettings(repeats=4))["key"] != case["key"]


@pytest.mark.parametrize("field, value, match", [("a2a_kernel", "padded", "a2a_kernel"),
                                                  ("weight_dtype", "fp8", "one dtype")])
def test_configs_the_layers_cannot_run_are_refused(field, value, match):
    with pytest.raises(ConfigError, match=match):
        build_case({**TINY, "tokens": 8, field: value}, FAST)


# --- one rank, in process ------------------------------------------------------------------

def test_resume_keeps_finished_rows_and_measures_only_the_rest(tmp_path):
    table = _table([{"tokens": t} for t in (8, 16, 24, 32)])
    seen = []

    def interrupt_after_two(record):
        seen.append(record["key"])
        if len(seen) == 2:
            raise KeyboardInterrupt("injected")
    with pytest.raises(KeyboardInterrupt):
        run_scenario_measurements(None, table, tmp_path, settings=FAST,
                                  launcher=inprocess_launcher(interrupt_after_two))
    first = best_records(Journal.in_folder(tmp_path).records())
    assert list(first) == seen

    asked = []
    inner = inprocess_launcher()

    def spy(cases, ep, path, settings):
        asked.extend(c["key"] for c in cases)
        inner(cases, ep, path, settings)
    out = run_scenario_measurements(None, table, tmp_path, settings=FAST, launcher=spy)
    assert len(asked) == 2 and not set(asked) & set(seen)
    keys = [r["key"] for r in Journal.in_folder(tmp_path).records()]
    assert len(keys) == len(set(keys)) == 4
    final = best_records(Journal.in_folder(tmp_path).records())
    assert all(final[k] == first[k] for k in seen)                      # finished rows kept
    assert set(out["measure_key"]) == set(keys)
    assert out["measured_time_s"].notna().all()


def test_measured_columns_and_relative_errors_one_rank(tmp_path):
    table = _table([{"tokens": 16, "shared_experts": 1, "shared_expert_ffn": 16},
                    {"tokens": 16}])
    out = run_scenario_measurements(None, table, tmp_path, settings=FAST,
                                    launcher=inprocess_launcher())
    for col in ("measured_time_s", "measured_time_p10_s", "measured_time_p90_s",
                "measured_experts_s", "rel_error_time", "rel_error_experts",
                "predicted_band_low_s", "predicted_band_high_s", "within_band",
                "measured_threads_per_rank"):
        assert col in out, col
    assert (out["measured_time_p10_s"] <= out["measured_time_s"]).all()
    assert (out["measured_time_s"] <= out["measured_time_p90_s"]).all()
    expected = (out["time_s"] - out["measured_time_s"]) / out["measured_time_s"]
    assert np.allclose(out["rel_error_time"], expected)
    assert out["rel_error_dispatch"].isna().all()                 # nothing to exchange on 1 rank
    assert out["measured_shared_experts_s"].iloc[0] > 0
    assert np.isnan(out["rel_error_shared_experts"].iloc[1])
    assert (out["measured_threads_per_rank"] == 1).all()
    assert out["predicted_band_low_s"].isna().all()           # datasheet profile: no fit quality
    summary = mape_table(out)
    assert summary.loc["all", "rows"] == 2 and "experts" in summary


def test_error_band_from_the_profiles_fit_quality(tmp_path):
    profile = tmp_path / "cpu-fitted.yaml"
    profile.write_text("name: cpu-fitted\ndescription: test\nbase: cpu\nkind: calibrated\n"
                       "fit_quality:\n  gemm: {fp32: {holdout: {mean_abs_pct: 10.0}}}\n"
                       "  streaming: {permute: {mean_abs_pct: 20.0}}\n")
    table = pd.DataFrame({"hardware": [str(profile)], "time_s": [1.0], "router_s": [0.0],
                          "permute_s": [0.25], "experts_s": [0.75], "measured_time_s": [1.2],
                          "weight_dtype": ["fp32"]})
    out = error_band(table)
    # z = 2: experts 0.75 * 2 * 10 % + permute 0.25 * 2 * 20 % = 0.25
    assert out["predicted_band_high_s"].iloc[0] == pytest.approx(1.25)
    assert out["predicted_band_low_s"].iloc[0] == pytest.approx(0.75)
    assert bool(out["within_band"].iloc[0])


# --- two ranks, torchrun + gloo ------------------------------------------------------------

@pytest.mark.distributed
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_ranks_measure_and_reproduce_expected_expert_counts(tmp_path):
    row = {"tokens": 512, "ep": 2, "routing": "zipf:1.2", "top_k": 2, "experts": 8}
    table = _table([row])
    out = run_scenario_measurements(None, table, tmp_path, settings=FAST)
    r = out.iloc[0]
    assert r["measured_time_s"] > 0 and r["measured_dispatch_s"] > 0 and r["measured_combine_s"] > 0
    assert np.isfinite(r["rel_error_dispatch"]) and r["measured_threads_per_rank"] == 1
    [record] = best_records(Journal.in_folder(tmp_path).records()).values()
    # slot counts of the measured forward against the cost model's expectation T_total * q
    q = inclusion_probs("zipf:1.2", 8, 2, 0)
    place = build_placement("contiguous", 8, 2, q)
    counts = np.array(record["slot_counts"], dtype=float)
    total = 2 * 512
    expect = total * q[place.slot_expert] * place.slot_share
    sigma = np.sqrt(expect * (1 - q[place.slot_expert]))
    assert counts.sum() == total * 2
    assert np.all(np.abs(counts - expect) <= 5 * sigma)


def test_missing_rows_after_a_run_are_an_error(tmp_path):
    table = _table([{"tokens": 8}])
    with pytest.raises(MeasureError, match="no measurement"):
        run_scenario_measurements(None, table, tmp_path, settings=FAST,
                                  launcher=lambda *args: None)


def test_attach_keeps_row_order_and_index():
    table = _table([{"tokens": 8}, {"tokens": 16}]).set_axis([5, 9])
    records = {k: {"key": k, "ep": 1, "repeats": 1, "threads_per_rank": 1,
                   "total_s": [t], "phases_s": {"experts": [t]}}
               for k, t in (("a", 1e-3), ("b", 2e-3))}
    out = attach(table, ["b", "a"], records)
    assert out.index.tolist() == [5, 9] and out["measured_time_s"].tolist() == [2e-3, 1e-3]


def test_contaminated_configs_are_measured_again_and_the_cleanest_kept(tmp_path):
    table = _table([{"tokens": 8}, {"tokens": 16}])
    calls = []

    def fake(cases, ep, path, settings):
        calls.append([c["key"] for c in cases])
        store = Journal(path)
        for c in cases:     # the first attempt shares the CPU with someone else
            frac = 0.5 if len(calls) == 1 else 0.01 * len(calls)
            store.add({"key": c["key"], "ep": 1, "repeats": 1, "threads_per_rank": 1,
                          "total_s": [1e-3 * len(calls)], "phases_s": {},
                          "foreign_cpu_frac": frac, "foreign_cpu_s": 1.0})
    settings = MeasureSettings(repeats=3, warmup=1, attempts=3)
    out = run_scenario_measurements(None, table, tmp_path, settings=settings, launcher=fake)
    assert [len(c) for c in calls] == [2, 2]          # measured again once, then clean
    assert out["measured_time_s"].tolist() == [2e-3, 2e-3]
    assert out["measured_foreign_cpu_frac"].tolist() == [0.02, 0.02]


def test_passes_measure_every_config_again_and_keep_the_quietest(tmp_path):
    """Pass 1 is clean; pass 2 is contaminated for config a (not counted, measured once more)
    and slower for b; pass 3 (a's retry) is the quietest a. Each keeps its lowest clean median."""
    table = _table([{"tokens": 8}, {"tokens": 16}])
    calls = []
    times = {0: {8: 3e-3, 16: 2e-3}, 1: {8: 1e-3, 16: 5e-3}, 2: {8: 2.5e-3}}

    def fake(cases, ep, path, settings):
        store = Journal(path)
        for c in cases:
            frac = 0.5 if (len(calls) == 1 and c["tokens"] == 8) else 0.0
            store.add({"key": c["key"], "ep": 1, "repeats": 1, "threads_per_rank": 1,
                          "total_s": [times[len(calls)][c["tokens"]]], "phases_s": {},
                          "foreign_cpu_frac": frac, "foreign_cpu_s": 1.0})
        calls.append(sorted(c["tokens"] for c in cases))
    settings = MeasureSettings(repeats=3, warmup=1, attempts=2, passes=2)
    out = run_scenario_measurements(None, table, tmp_path, settings=settings, launcher=fake)
    assert calls == [[8, 16], [8, 16], [8]]
    # a: 3 ms clean, 1 ms contaminated (ignored), 2.5 ms clean -> 2.5; b: min(2, 5) -> 2
    assert out["measured_time_s"].tolist() == [2.5e-3, 2e-3]
    assert clean_counts(Journal.in_folder(tmp_path).records()) == {
        k: 2 for k in out["measure_key"]}
    with pytest.raises(ConfigError, match="passes"):
        MeasureSettings(passes=0)


def test_shared_profile_scales_the_base_by_measured_shares(tmp_path):
    from moesim.calibration.profile_writer import write_profile
    from moesim.config import load_profile
    from moesim.calibration.shared_profiles import share_factors, shared_profile_doc

    base_file = tmp_path / "cpu-x-shared1.yaml"
    base_file.write_text(
        "name: cpu-x-shared1\ndescription: t\nbase: cpu\nkind: calibrated\n"
        "fit_quality:\n  gemm: {fp32: {holdout: {mean_abs_pct: 3.0}}}\n"
        "  scale_up: {per_world_size: {'4': {alpha_s: 0.001, bytes_per_s: 8.0e+8,"
        " in_sample: {mean_abs_pct: 20.0}}}}\n")
    base = load_profile(base_file)

    def rec(ranks, gemm, copy, ops):
        return {"ranks": ranks, "threads_per_rank": 1, "duration_s": 1.0, "load_1m": 0.5,
                "rates": {"gemm_flops_per_s": [gemm] * ranks, "copy_bytes_per_s": [copy] * ranks,
                          "ops_per_s": [ops] * ranks}}
    share = {1: [rec(1, 100e9, 20e9, 3e5)] * 3, 4: [rec(4, 48e9, 6e9, 1.5e5)] * 3}
    assert share_factors(share, 4) == pytest.approx(
        {"gemm_flops_per_s": 0.48, "copy_bytes_per_s": 0.3, "ops_per_s": 0.5})
    doc = shared_profile_doc(base, str(base_file), "cpu-x-shared4", share, 4)
    prof = write_profile(doc, tmp_path / "cpu-x-shared4.yaml", ["test"])
    assert prof.compute.peak_flops_per_s["fp32"] == pytest.approx(
        base.compute.peak_flops_per_s["fp32"] * 0.48, rel=1e-3)
    assert prof.compute.launch_overhead_s == pytest.approx(base.compute.launch_overhead_s / 0.5,
                                                           rel=1e-3)
    assert prof.memory.bandwidth_bytes_per_s == pytest.approx(
        base.memory.bandwidth_bytes_per_s * 0.3, rel=1e-3)
    assert prof.scale_up.latency_s == pytest.approx(0.001 - prof.compute.launch_overhead_s,
                                                    rel=1e-3)
    assert prof.fit_quality["gemm"]["fp32"]["holdout"]["mean_abs_pct"] == 3.0


TINY_SCENARIO = """\
name: tiny-measure
model: {hidden: 16, expert_ffn: 16, experts: 8, top_k: 2, weight_dtype: fp32,
        activation_dtype: fp32, dispatch_dtype: fp32, combine_dtype: fp32}
hardware: [cpu]
run: {ep: 1}
sweep:
  tokens: [8, 16]
mode: both
outputs: {report: false, parquet: false}
"""


def test_cli_measures_a_scenario_and_resumes(tmp_path, capsys):
    from moesim.cli import main

    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY_SCENARIO)
    out = tmp_path / "out"
    args = ["measure", str(scenario), "--out", str(out), "--repeats", "2", "--warmup", "1",
            "--cache-mib", "0"]
    assert main(args) == 0
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2 and table["measured_time_s"].gt(0).all()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["measurement"]["threads_per_rank"] == [1]
    assert "cpu_model" in meta["measurement"]["device"]
    assert "time" in capsys.readouterr().out
    records = Journal.in_folder(out).records()
    assert all(r["measured_commit"] == records[0]["measured_commit"] for r in records)
    assert main(args) == 0                                            # resumes: nothing new
    assert Journal.in_folder(out).records() == records
    # `moesim run` (mode both) goes through the same hook, default settings
    assert main(["run", str(scenario), "--out", str(tmp_path / "run")]) == 0
    run_table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert run_table["rel_error_time"].notna().all()
    assert (tmp_path / "run" / "measurement.json").is_file()


def test_cli_help_and_bad_arguments():
    from moesim.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["measure", "--help"])
    assert exc.value.code == 0
    assert main(["measure"]) == 2                       # neither a scenario nor --shared-profiles


def test_shared_profile_takes_sync_latency_and_idle_peer_speedup(tmp_path, monkeypatch):
    """Worked example, 4 ranks on 2 cores. Sync case: 100 x (GEMM; all-to-all) took 0.30 s and
    100 x GEMM 0.10 s on every rank -> 2 ms per exchange, less the wire time of 3 peers x 16 KiB
    at 0.8 GB/s (61.44 us) -> 1.9386 ms. GEMM shares: 0.96 with 2 ranks (one per core), 0.48
    with 4 -> a rank whose peers wait computes 0.96 / 0.48 = 2x faster."""
    from moesim.calibration.profile_writer import write_profile
    from moesim.config import load_profile
    from moesim.calibration import shared_profiles as runner

    base_file = tmp_path / "cpu-y-shared1.yaml"
    base_file.write_text(
        "name: cpu-y-shared1\ndescription: t\nbase: cpu\nkind: calibrated\n"
        "fit_quality:\n  scale_up: {per_world_size: {'4': {alpha_s: 0.001, bytes_per_s: 8.0e+8}}}\n")
    base = load_profile(base_file)
    sync = {"iters": 100, "bytes_per_peer": 16384, "compute_s": 0.10, "compute_a2a_s": 0.30,
            "overlap_s": 0.25}

    def rec(ranks, gemm):
        return {"ranks": ranks, "threads_per_rank": 1, "duration_s": 1.0, "load_1m": 0.5,
                "rates": {"gemm_flops_per_s": [gemm] * ranks, "copy_bytes_per_s": [1e10] * ranks,
                          "ops_per_s": [1e5] * ranks},
                **({"sync": [sync] * ranks} if ranks > 1 else {})}
    share = {1: [rec(1, 100e9)] * 3, 2: [rec(2, 96e9)] * 3, 4: [rec(4, 48e9)] * 3}
    monkeypatch.setattr(runner, "usable_cores", lambda: 2)
    lat = runner.sync_latency(share[4], 8e8)
    assert lat["latency_s"] == pytest.approx(0.002 - 3 * 16384 / 8e8, rel=1e-3)
    doc = runner.shared_profile_doc(base, str(base_file), "cpu-y-shared4", share, 4)
    prof = write_profile(doc, tmp_path / "cpu-y-shared4.yaml", ["test"])
    assert prof.compute.idle_peer_speedup == pytest.approx(2.0, rel=1e-3)
    assert prof.scale_up.latency_s == pytest.approx(lat["latency_s"]
                                                    - prof.compute.launch_overhead_s, rel=1e-3)
    assert "between compute phases" in prof.sources["scale_up.latency_s"]
    # overlapped: 2.5 ms per iteration against 3 ms in sequence hides 0.5 of min(1 ms GEMM,
    # 2 ms exchange); reported only, the base's comm_overlap_fraction stays
    assert prof.fit_quality["sync_overlap"]["fraction"] == pytest.approx(0.5)
    assert prof.compute.comm_overlap_fraction == base.compute.comm_overlap_fraction
    # ranks <= cores: every rank has its own core, nothing to gain while peers wait
    assert runner.idle_peer_speedup(share, 2, 2, runner.share_factors(share, 2))[0] == 1.0
    # no run with one rank per core: the ideal R / C, marked as an assumption
    value, note = runner.idle_peer_speedup({1: share[1], 4: share[4]}, 4, 2,
                                           runner.share_factors(share, 4))
    assert value == 2.0 and note.startswith("assumption")
