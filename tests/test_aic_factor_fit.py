"""The fused-kernel fit (fixed time + factor, jointly, within bounds) and the collectors' routing,
on synthetic tables with a known law."""
from __future__ import annotations

import numpy as np
import pytest

from moesim.calibration.aic import factor_fit, routing


def _terms(rows: int = 200, seed: int = 0) -> dict:
    """Synthetic expert terms ``[rows, 1]``: padded m spread over the factor nodes, compute
    above the memory floor at factor 1 (a GEMM the factor can slow down or speed up)."""
    rng = np.random.default_rng(seed)
    m = 16.0 * 2.0 ** rng.integers(0, 9, rows)
    col = lambda x: np.asarray(x, float)[:, None]  # noqa: E731
    up_c = col(rng.uniform(5e-6, 2e-3, rows))
    return {"m_padded": col(m), "launch_s": col(np.full(rows, 5e-6)),
            "act_s": col(np.full(rows, 2e-6)), "up_compute_s": up_c,
            "up_memory_s": 0.2 * up_c, "down_compute_s": 0.5 * up_c,
            "down_memory_s": 0.1 * up_c, "other_s": np.full(rows, 1.5e-5),
            "local_experts": rng.choice([8.0, 32.0, 128.0], rows)}


def _law(m):
    return factor_fit.factor_at(m, factor_fit.FACTOR_NODES, [1.4, 1.0, 0.8, 0.7, 0.9])


def test_joint_fit_recovers_fixed_times_and_factor_of_a_known_law():
    terms = _terms()
    truth = factor_fit.predict_s(terms, 3e-5, factor_fit.FACTOR_NODES,
                                 [1.4, 1.0, 0.8, 0.7, 0.9], per_expert_s=2e-7)
    res = factor_fit.fit(terms, truth)
    assert res["fixed_s"] == pytest.approx(3e-5, rel=0.02)
    assert res["per_expert_s"] == pytest.approx(2e-7, rel=0.02)
    got = dict((n, v) for n, v in res["points"])
    for node in factor_fit.FACTOR_NODES:
        assert got[node] == pytest.approx(float(_law(node)), rel=0.03)
    assert res["quality"]["bound_hits"] == []
    assert res["quality"]["in_sample_mape_pct"] < 0.5


def test_fixed_time_never_exceeds_what_the_cheapest_call_leaves():
    """Data that ask for a fixed time larger than the cheapest measured call allows: the fit
    stops at the bound (cheapest call minus its floor) and reports the hit."""
    terms = _terms()
    meas = factor_fit.predict_s(terms, 3e-5, factor_fit.FACTOR_NODES, [1.0] * 5)
    cheapest = int(np.argmin(meas))
    meas[cheapest] *= 0.5  # one call far faster than the law: it caps the fixed time
    res = factor_fit.fit(terms, meas)
    upper = res["quality"]["fixed_s_bounds"][1]
    floor = terms["other_s"][cheapest]
    assert 0.0 < upper <= meas[cheapest] - floor + 1e-9  # the bound is a minimum over rows
    assert 0.0 <= res["fixed_s"] <= upper * (1 + 1e-6)
    assert "fixed_s at upper bound" in res["quality"]["bound_hits"]
    per_expert_top = res["quality"]["per_expert_s_bounds"][1]
    assert 0.0 <= res["per_expert_s"] <= per_expert_top * (1 + 1e-6)
    assert per_expert_top <= (meas[cheapest] - floor) / terms["local_experts"][cheapest] + 1e-12


def test_factor_stays_in_its_physical_range_when_the_data_are_inconsistent():
    terms = _terms()
    # 20x slower than any factor >= FACTOR_MIN can explain, and no room for a fixed time
    meas = factor_fit.predict_s(terms, 0.0, factor_fit.FACTOR_NODES, [0.05] * 5)
    meas[np.argmin(meas)] = 1e-7
    res = factor_fit.fit(terms, meas)
    values = [v for _, v in res["points"]]
    assert min(values) >= factor_fit.FACTOR_MIN and max(values) <= factor_fit.FACTOR_MAX
    assert res["fixed_s"] == 0.0 and res["per_expert_s"] == 0.0
    assert any("lower bound" in h for h in res["quality"]["bound_hits"])
    assert any(h.startswith("fixed_s forced to 0") for h in res["quality"]["bound_hits"])


def _collector_round_robin(per_rank, remaining, valid, pick, step):
    """The collectors' loop as its docstring states it (one token at a time, ranks in turn)."""
    c = per_rank.copy()
    while remaining > 0:
        progressed = False
        for r in range(c.shape[0]):
            ok = np.flatnonzero(valid(c[r]))
            if ok.size == 0:
                continue
            c[r, ok[pick(c[r][ok])]] += step
            remaining, progressed = remaining - 1, True
            if remaining == 0:
                break
        if not progressed:
            break
    return c


def test_closed_form_round_robin_matches_the_one_token_at_a_time_loop():
    rng = np.random.default_rng(1)
    for _ in range(500):
        ep, local, cap = (int(rng.choice([1, 2, 4, 8])), int(rng.integers(1, 6)),
                          int(rng.integers(1, 6)))
        c = rng.integers(0, cap + 1, size=(ep, local))
        q = int(rng.integers(0, ep * local * cap + 3))
        up = _collector_round_robin(c, q, lambda x: x < cap, np.argmin, 1)
        np.testing.assert_array_equal(routing._round_robin(c.copy(), q, cap), up)
        down = _collector_round_robin(c, q, lambda x: x > 0, np.argmax, -1)
        np.testing.assert_array_equal(-routing._round_robin(-c.copy(), q, 0), down)


def test_tiny_batches_spread_over_ranks_not_onto_rank_zero():
    """2 tokens, top-8, 384 experts, ep 8: the scaled loads round to 0 and the 16 picks are
    dealt round-robin over the 8 ranks, so rank 0 holds 2 experts with one token each."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        counts = routing.power_law_counts(2, 384, 8, 8, 1.01, rng)
        assert counts.shape == (48,)
        assert counts.sum() == 2 and counts.max() == 1


@pytest.mark.parametrize("tokens,experts,top_k,ep", [(1024, 64, 4, 8), (16, 256, 8, 8),
                                                     (4096, 8, 2, 2), (3, 128, 8, 1)])
def test_power_law_loads_respect_the_collectors_invariants(tokens, experts, top_k, ep):
    rng = np.random.default_rng(3)
    counts = routing.power_law_counts(tokens, experts, top_k, ep, 1.2, rng)
    assert counts.shape == (experts // ep,)
    assert counts.max() <= tokens  # a token picks an expert at most once
    assert counts.sum() >= tokens * top_k / ep - 1e-9  # rank 0 is the busiest rank
    if ep == 1:
        assert counts.sum() == tokens * top_k


def test_weight_only_transfer_is_the_weight_read_at_small_m():
    """A bf16 grid at its memory roofline (eff = compute / max(compute, memory)) moves to a
    w4a16 MXFP4 grid whose small-M time is the 4-bit weight read: bytes / bandwidth."""
    import pandas as pd

    from moesim.calibration.aic import gemm_fit
    from moesim.config import load_profile
    from moesim.config.shape_grid import gemm_grid_efficiency

    profile = load_profile("h200-sxm").model_copy(update={"compute": load_profile(
        "h200-sxm").compute.model_copy(update={"gemm_tile_m": 16})})
    m, n, k = 16.0, 5760.0, 2880.0
    c, mem = gemm_fit.ideal_times(profile, "bfloat16", [m], [n], [k])
    grid = {"m": [m], "n": [n], "k": [k], "values": [[[float(c[0] / max(c[0], mem[0]))]]]}
    w4 = gemm_fit.transfer_grid(profile, grid, "bfloat16", "w4a16_mxfp4")
    rows = pd.DataFrame({"m": [1, 16], "n": [n, n], "k": [k, k]})
    eff = lambda mm, nn, kk: gemm_grid_efficiency(  # noqa: E731
        w4["m"], w4["n"], w4["k"], np.asarray(w4["values"]), mm, nn, kk)
    got = gemm_fit.predict_s(profile, "w4a16_mxfp4", eff, rows, 0.0)
    weight_read_s = (n * k * (0.5 + 1 / 32) + 16 * (k * 2 + n * 2)) / (
        profile.memory.bandwidth_bytes_per_s * float(profile.efficiency.memory_bandwidth.at(1.0)))
    np.testing.assert_allclose(got, weight_read_s, rtol=0.02)
