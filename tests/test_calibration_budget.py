"""Calibration in bounded time: the section budget's estimates, skips and first-call checks,
driven by a fake clock (no timing), and a whole suite run on a simulated slow CPU."""
from __future__ import annotations

from dataclasses import replace

import pytest

from moesim.harness.microbench import suite
from moesim.harness.microbench.budget import (
    FULL_CAPS_S,
    QUICK_CAPS_S,
    OverBudget,
    SectionBudget,
    scaled_caps,
    skipped_table,
)
from moesim.harness.microbench.plan import make_plan


class FakeClock:
    """Seconds advance only when a fake point 'runs'."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float):
        self.now += seconds
        return seconds


def test_estimate_fits_fixed_plus_work_to_the_family():
    clock = FakeClock()
    b = SectionBudget("gemm", 100.0, clock)
    assert b.estimate("gemm/fp32", 10.0) is None
    b.attempt("a", "gemm/fp32", 10.0, lambda: clock.spend(2.0))
    assert b.estimate("gemm/fp32", 40.0) == pytest.approx(2.0)  # one point: its time
    b.attempt("b", "gemm/fp32", 40.0, lambda: clock.spend(4.0))
    b.attempt("c", "gemm/fp32", 70.0, lambda: clock.spend(6.0))
    # within the range: t = 4/3 + w / 15 through all three (1.33 s fixed, 1 s per 15 units)
    assert b.estimate("gemm/fp32", 45.0) == pytest.approx(4.0 / 3.0 + 3.0)  # on the line
    assert b.estimate("gemm/fp32", 100.0) == pytest.approx(6.0)  # beyond: the largest's time
    assert b.estimate("gemm/bf16", 5.0) is None  # another family learns nothing from fp32
    b.attempt("d", "gemm/fp32", 80.0, lambda: clock.spend(1.0))  # noise: a fast big point
    assert b.estimate("gemm/fp32", 75.0) >= 0.0  # a, b >= 0: never negative
    assert b.left_s() == pytest.approx(87.0)


def test_points_that_would_overrun_are_skipped_and_recorded():
    clock = FakeClock()
    b = SectionBudget("layer", 10.0, clock)
    ran = []
    for work in (1, 2, 4, 8, 16):  # each point takes `work` seconds
        b.attempt(f"p{work}", "layer_ffn/bf16", work, lambda w=work: ran.append(clock.spend(w)))
    # 1 + 2 + 4 = 7 s spent; beyond the range the largest point's 4 s > 3 s left
    assert ran == [1, 2, 4]
    assert [s.point for s in b.skipped] == ["p8", "p16"]
    assert b.skipped[0].estimated_s == pytest.approx(4.0)
    assert b.skipped[0].left_s == pytest.approx(3.0)
    assert "layer_ffn/bf16" in b.skipped[0].reason and "3.00 s left" in b.skipped[0].reason
    assert clock.now <= b.cap_s
    table = skipped_table([b])
    assert table[0]["section"] == "layer" and table[0]["point"] == "p8"


def test_a_cheaper_point_after_a_skip_still_runs():
    clock = FakeClock()
    b = SectionBudget("ops", 10.0, clock)
    b.attempt("big", "ops/fp32", 8.0, lambda: clock.spend(8.0))
    assert b.attempt("bigger", "ops/fp32", 16.0, lambda: clock.spend(16.0)) is None
    assert b.attempt("small", "ops/fp32", 1.0, lambda: (clock.spend(1.0), "done")[1]) == "done"
    assert b.measured == 2 and len(b.skipped) == 1


def test_first_call_check_stops_a_point_whose_family_is_new():
    clock = FakeClock()
    b = SectionBudget("copy", 5.0, clock)
    calls = []

    def slow(_):
        calls.append(clock.spend(1.0))  # 1 s per call; 10 calls would need 10 s > 5 s

    def point():
        fn = b.guard(slow, calls=10)
        for _ in range(10):
            fn(None)
        return "measured"

    assert b.attempt("copy 1 GiB", "copy", 1.0, point) is None
    assert len(calls) == 1  # stopped after the first call
    skip = b.skipped[0]
    assert skip.estimated_s == pytest.approx(10.0) and "first call took 1 s" in skip.reason
    # what the first call taught is kept: a same-size point is now skipped before it starts
    assert b.attempt("again", "copy", 1.0, point) is None
    assert len(calls) == 1


def test_guard_passes_fast_calls_through():
    clock = FakeClock()
    b = SectionBudget("copy", 5.0, clock)
    fn = b.guard(lambda x: clock.spend(0.1) and x * 2, calls=10)
    assert [fn(i) for i in range(3)] == [0, 2, 4]
    with pytest.raises(OverBudget):
        b.check(first_s=1.0, calls=6)


def test_caps_bound_quick_and_full_and_rescale():
    assert sum(QUICK_CAPS_S.values()) <= 175.0  # --quick: <= 3 min with imports and fits
    assert set(QUICK_CAPS_S) == set(suite.SECTIONS) == set(FULL_CAPS_S)
    caps = scaled_caps(QUICK_CAPS_S, 60.0)
    assert sum(caps.values()) == pytest.approx(60.0)
    assert caps["layer"] / caps["ops"] == pytest.approx(QUICK_CAPS_S["layer"] / QUICK_CAPS_S["ops"])
    with pytest.raises(ValueError, match="must be > 0"):
        scaled_caps(QUICK_CAPS_S, 0.0)
    assert make_plan("cpu", True, ("fp32",), budget_s=30.0).caps_s == scaled_caps(QUICK_CAPS_S, 30.0)


def test_suite_on_a_slow_cpu_stays_within_its_caps(monkeypatch):
    """A simulated CPU on which bf16 runs 8x slower than fp32 (issue 12's Zen 3): every section
    ends within its cap, bf16 loses its large points first, and every skip is listed."""
    clock = FakeClock()
    rate = {"fp32": 2e9, "bf16": 0.25e9}  # FLOP/s

    def fake_section(name):
        def run(ctx, plan, log):
            out = []
            for tokens in (16, 256, 1024, 4096, 16384):
                for dtype in plan.dtypes:
                    work = 2e6 * tokens
                    per_call = (0.05 + work / rate[dtype]) / 10  # a point is 10 calls

                    def point():
                        call = ctx.budget.guard(lambda: clock.spend(per_call), calls=9)
                        return [call() for _ in range(10)]

                    rec = ctx.budget.attempt(f"{name} {dtype} {tokens}", f"{name}/{dtype}", work,
                                             point)
                    out += rec or []
            return out
        return run

    for name in ("_ops", "_layer", "_copy", "_gemm", "_grouped"):
        monkeypatch.setattr(suite, name, fake_section(name.strip("_")))
    monkeypatch.setattr(suite, "dtype_works", lambda d, device: True)
    import moesim.harness.device as device_mod

    monkeypatch.setattr(device_mod, "device_facts", lambda device: {"device_type": "cpu"})
    plan = replace(make_plan("cpu", True, ("bf16", "fp32")), caps_s=dict(QUICK_CAPS_S))
    logs = []
    meas = suite.run_suite("cpu", plan, 32e6, sections=("ops", "layer", "gemm"), log=logs.append,
                           clock=clock, progress=True)
    prov = meas.provenance
    for name in ("ops", "layer", "gemm"):
        assert prov["section_seconds"][name] <= QUICK_CAPS_S[name]
    assert prov["suite_seconds"] <= sum(QUICK_CAPS_S[n] for n in ("ops", "layer", "gemm"))
    skipped = prov["skipped_points"]
    assert skipped and all(s["reason"] for s in skipped)
    assert any("bf16 16384" in s["point"] for s in skipped)
    assert not any("fp32 16" == s["point"].split(" ", 1)[1] for s in skipped)
    assert logs[0].startswith("plan: ") and "at most" in logs[0]


def test_cli_rejects_a_budget_that_is_not_positive(capsys):
    from moesim.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--quick", "--budget-s", "0", "--out", "x.yaml"])
    assert exc.value.code == 2
    assert "expected seconds > 0, got '0'" in capsys.readouterr().err


def test_an_alltoall_run_that_outlasts_the_section_is_skipped(monkeypatch, tmp_path):
    import torch

    import moesim.harness.alltoall as a2a
    from moesim.harness.microbench.common import Context

    timeouts = []

    def slow_launch(world, out, *, timeout_s, **kw):
        timeouts.append(timeout_s)
        raise a2a.HarnessError(f"all-to-all benchmark with {world} ranks exceeded "
                               f"{timeout_s:.0f} s: torchrun ...")

    monkeypatch.setattr(a2a, "launch_local", slow_launch)
    plan = make_plan("cpu", True, ("fp32",))
    ctx = Context(torch.device("cpu"), plan.bench, 32e6)
    ctx.budget = SectionBudget("alltoall", 23.0, FakeClock())
    assert suite._alltoall(ctx, plan, lambda m: None, tmp_path) == []
    assert timeouts[0] == pytest.approx(23.0)  # the run may take the section's time left
    assert [s.point for s in ctx.budget.skipped][0] == "all-to-all 2 ranks"
    assert "stopped after 23 s" in ctx.budget.skipped[0].reason

    def broken(world, out, **kw):
        raise a2a.HarnessError("all-to-all benchmark with 2 ranks failed (exit 1)")

    monkeypatch.setattr(a2a, "launch_local", broken)
    ctx.budget = SectionBudget("alltoall", 23.0, FakeClock())
    with pytest.raises(a2a.HarnessError, match="failed"):  # a real failure is not a skip
        suite._alltoall(ctx, plan, lambda m: None, tmp_path)


def test_ffn_tokens_are_measured_coverage_first():
    assert suite.coverage_order([4, 16, 64, 256, 1024, 4096]) == [4, 4096, 64, 16, 256, 1024]
    assert suite.coverage_order([7]) == [7] and suite.coverage_order([]) == []
