"""Expert capacity with token dropping versus dropless routing."""
import numpy as np
import pytest

import moesim
from moesim.core import counts

KW = dict(tokens=2048, ep=8, routing="zipf:1.0")


def test_expected_excess_matches_sampling():
    rng = np.random.default_rng(1)
    x = rng.binomial(2000, 0.05, 400_000)
    for cap in (0, 80, 100, 115, 3000):
        assert counts.expected_excess(2000, 0.05, cap) == \
            pytest.approx(np.maximum(x - cap, 0).mean(), rel=0.02, abs=1e-3)


def test_drop_rate_falls_and_time_rises_with_capacity():
    rates, times = [], []
    for cf in (0.5, 1.0, 1.25, 2.0, 4.0):
        r = moesim.predict("mixtral-8x7b", "h100-sxm", drop_tokens=True, capacity_factor=cf, **KW)
        rates.append(r.drop_rate)
        times.append(r.time_s)
    assert all(np.diff(rates) < 0) and all(np.diff(times) > 0)
    dropless = moesim.predict("mixtral-8x7b", "h100-sxm", **KW)
    assert dropless.drop_rate == 0 and dropless.time_s >= times[-1] * (1 - 1e-9)
    # capacity 0.5 keeps at most half of the assignments
    assert rates[0] >= 0.5


def test_closed_form_drop_rate_matches_monte_carlo():
    for cf in (1.0, 1.5):
        exp = moesim.predict("qwen3-30b-a3b", "h100-sxm", drop_tokens=True, capacity_factor=cf, **KW)
        mc = moesim.predict("qwen3-30b-a3b", "h100-sxm", drop_tokens=True, capacity_factor=cf,
                            mode="montecarlo", samples=100, **KW)
        assert exp.drop_rate == pytest.approx(mc.drop_rate, abs=0.01)


def test_uniform_routing_with_headroom_drops_almost_nothing():
    r = moesim.predict("deepseek-v3", "h100-sxm", tokens=4096, ep=32, drop_tokens=True,
                       capacity_factor=1.5)
    assert r.drop_rate < 1e-3
