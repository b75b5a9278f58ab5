"""Expert offloading: cache hit rates (closed forms vs simulation), the memory split, and the
decode-step model's invariants."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import moesim
from moesim.config import ConfigError, load_profile
from moesim.core import expert_cache as core
from moesim.core.routing import inclusion_probs
from moesim.offload import (
    DEFAULT_SHAPE,
    KNOWN_SHAPES,
    memory_plan,
    non_expert_params,
    predict_offload,
)

EXPERTS, TOP_K = 16, 2


def _stream(spec: str, tokens_per_step: int, steps: int, seed: int = 0):
    """Steps of independent tokens, each choosing TOP_K distinct experts; and the empirical q."""
    rng = np.random.default_rng(seed)
    shares = inclusion_probs(spec, EXPERTS, 1, seed=0)
    out = [np.stack([rng.choice(EXPERTS, TOP_K, replace=False, p=shares)
                     for _ in range(tokens_per_step)]) for _ in range(steps)]
    ids = np.concatenate(out)
    return out, np.bincount(ids.ravel(), minlength=EXPERTS) / ids.shape[0]


@pytest.mark.parametrize("cache", [0, 3, 8, 15])
def test_popularity_hit_rate_closed_form_equals_simulation(cache):
    steps, q = _stream("zipf:1.0", 1, 4000)
    fetched, needed = core.simulate(steps, cache, "popularity", EXPERTS)
    resident = np.argsort(-q, kind="stable")[:cache]
    assert needed == TOP_K
    assert 1 - fetched / needed == pytest.approx(q[resident].sum() / TOP_K, abs=1e-12)
    assert fetched == pytest.approx(core.popularity_misses(q, cache), abs=1e-12)


def test_popularity_closed_form_with_batched_steps():
    steps, q = _stream("zipf:0.8", 4, 4000, seed=1)
    for cache in (2, 6, 10):
        fetched, _ = core.simulate(steps, cache, "popularity", EXPERTS)
        assert fetched == pytest.approx(core.popularity_misses(q, cache, tokens=4), rel=0.03)


@pytest.mark.parametrize("spec", ["zipf:1.0", "zipf:0.5", "uniform"])
@pytest.mark.parametrize("cache", [2, 4, 8, 12])
def test_lru_che_approximation_matches_simulation(spec, cache):
    steps, q = _stream(spec, 1, 6000, seed=2)
    fetched, needed = core.simulate(steps, cache, "lru", EXPERTS)
    che = core.lru_misses(q, cache)
    assert 1 - fetched / needed == pytest.approx(1 - che / TOP_K, abs=0.02)


def test_lru_che_with_batched_steps_when_the_cache_holds_a_step():
    """Che is optimistic when a step needs more experts than the cache holds; from one step's
    working set (~5.7 experts here) on it is within 2 points."""
    steps, q = _stream("zipf:1.0", 4, 6000, seed=3)
    need = core.step_need(q, 4).sum()
    for cache in (8, 12):
        fetched, needed = core.simulate(steps, cache, "lru", EXPERTS)
        assert needed == pytest.approx(need, rel=0.01)
        assert 1 - fetched / needed == pytest.approx(1 - core.lru_misses(q, cache, 4) / need,
                                                     abs=0.02)


def test_lru_misses_fall_with_cache_size_and_vanish_when_all_fit():
    q = inclusion_probs("zipf:1.2", 64, 8, seed=0)
    misses = [core.lru_misses(q, c) for c in range(0, 65, 8)]
    assert all(a >= b - 1e-12 for a, b in zip(misses, misses[1:]))
    assert misses[0] == pytest.approx(8.0) and misses[-1] == 0.0
    assert core.lru_misses(np.full(8, 0.25), 2) == pytest.approx(2 * 0.75)  # uniform: C / N hit


def test_mixtral_does_not_fit_a_24gb_card_and_auto_fills_the_rest():
    model, hw = moesim.load_model("mixtral-8x7b"), load_profile("rtx-4090")
    plan = memory_plan(model, hw)
    assert plan.expert_bytes == 3 * 4096 * 14336 * 2
    assert not plan.fits_all
    assert plan.cache_experts == plan.auto_cache
    free = hw.memory.capacity_bytes - plan.non_expert_bytes - plan.kv_cache_bytes - plan.reserve_bytes
    assert plan.cache_experts * plan.expert_bytes <= free < (plan.cache_experts + 1) * plan.expert_bytes
    assert 0 < plan.cache_experts < plan.total_experts == 8 * 32


def test_non_expert_formula_reproduces_mixtral_parameter_count():
    """Jiang et al. 2024 (arXiv:2401.04088): Mixtral 8x7B has 46.7B parameters in total."""
    model = moesim.load_model("mixtral-8x7b")
    rest = sum(non_expert_params(model, KNOWN_SHAPES["mixtral-8x7b"]).values())
    total = rest + model.experts * model.moe_layers * model.expert_params()
    assert total == pytest.approx(46.7e9, rel=0.005)
    assert rest == pytest.approx(1.6e9, rel=0.02)
    mha = sum(non_expert_params(model, DEFAULT_SHAPE).values())
    assert mha > rest  # the MHA assumption overestimates GQA attention


def test_everything_fits_means_no_fetch_cost():
    r = predict_offload("mixtral-8x7b", "gh200")  # 96 GB holds Mixtral-8x7B in bf16
    assert r.memory.fits_all and r.cache_experts == r.memory.total_experts
    assert r.fetched_experts_per_step == 0 and r.hit_rate == 1.0
    assert r.breakdown_s["expert_fetch_stall"] == 0 and r.breakdown_s["prefetch_exposed"] == 0
    full = predict_offload("mixtral-8x7b", "rtx-4090", cache_experts=256, policy="popularity")
    assert full.breakdown_s["expert_fetch_stall"] == 0
    assert full.step_time_s == pytest.approx(sum(full.breakdown_s.values()))


@settings(max_examples=12, deadline=None)
@given(cache=st.integers(0, 256), policy=st.sampled_from(["lru", "popularity"]),
       prefetch=st.floats(0.0, 1.0), overlap=st.sampled_from(["sum", "max"]),
       low=st.floats(1e9, 100e9), factor=st.floats(1.0, 20.0))
def test_more_host_bandwidth_is_never_slower(cache, policy, prefetch, overlap, low, factor):
    kw = dict(cache_experts=cache, policy=policy, prefetch_accuracy=prefetch, overlap=overlap,
              routing="zipf:0.8")
    slow = predict_offload("mixtral-8x7b", "rtx-4090", host_bandwidth_bytes_per_s=low, **kw)
    fast = predict_offload("mixtral-8x7b", "rtx-4090", host_bandwidth_bytes_per_s=low * factor, **kw)
    assert fast.step_time_s <= slow.step_time_s * (1 + 1e-12)


def test_popularity_beats_lru_on_skewed_routing_and_tokens_per_s_rise_with_cache():
    kw = dict(routing="zipf:1.0")
    lru = predict_offload("mixtral-8x7b", "rtx-4090", policy="lru", **kw)
    pop = predict_offload("mixtral-8x7b", "rtx-4090", policy="popularity", **kw)
    assert pop.hit_rate > lru.hit_rate and pop.tokens_per_s > lru.tokens_per_s
    rates = [predict_offload("mixtral-8x7b", "rtx-4090", cache_experts=c, **kw).tokens_per_s
             for c in (0, 64, 128, 256)]
    assert rates == sorted(rates)


def test_trace_replay(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.stack([rng.choice(8, 2, replace=False) for _ in range(600)])
    path = tmp_path / "trace.npy"
    np.save(path, ids)
    r = predict_offload("mixtral-8x7b", "rtx-4090", trace=str(path), cache_experts=64)
    assert 0.0 < r.hit_rate < 1.0 and r.tokens_per_s > 0
    assert r.settings["trace"] == str(path)


def test_bad_inputs():
    with pytest.raises(ConfigError):
        predict_offload("mixtral-8x7b", "rtx-4090", cache_experts=10_000)
    with pytest.raises(ConfigError):
        predict_offload("mixtral-8x7b", "rtx-4090", policy="fifo")
    with pytest.raises(ConfigError):
        predict_offload("mixtral-8x7b", "rtx-4090", prefetch_accuracy=1.5)


def _parser():
    from moesim.cli import offload

    parser = argparse.ArgumentParser(prog="moesim")
    offload.register(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.parametrize("extra", [[], ["--sweep", "--policy", "popularity", "--routing",
                                        "zipf:1.0", "--prefetch-accuracy", "0.5"]])
def test_cli_offload(capsys, extra):
    args = _parser().parse_args(["offload", "--model", "mixtral-8x7b", "--hardware", "rtx-4090",
                                 "--cache-experts", "auto", *extra])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "hit rate" in out


def test_cli_offload_json(capsys):
    args = _parser().parse_args(["offload", "-m", "mixtral-8x7b", "-H", "gh200", "--json"])
    assert args.func(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["memory"]["cache_experts"] == 256 and data["tokens_per_s"] > 0


def test_cli_offload_help():
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["offload", "--help"])
    assert info.value.code == 0


def test_recorded_trace_gives_each_layer_its_own_stream():
    from pathlib import Path

    path = Path(__file__).parent / "data" / "traces" / "tiny-mixtral.npz"
    pooled = predict_offload("mixtral-8x7b", "rtx-4090", trace=str(path), cache_experts=96,
                             policy="popularity")
    one = predict_offload("mixtral-8x7b", "rtx-4090", trace=f"{path}@0", cache_experts=96,
                          policy="popularity")
    assert 0 < pooled.hit_rate < 1 and 0 < one.hit_rate < 1
