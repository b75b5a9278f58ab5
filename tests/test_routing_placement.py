"""Property tests for routing distributions and expert placement."""
from math import comb

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from moesim import inputs
from moesim.config import ConfigError
from moesim.core import placement, routing, traffic

experts_k = st.integers(2, 128).flatmap(lambda e: st.tuples(st.just(e), st.integers(1, min(e, 8))))
specs = st.one_of(st.just("uniform"), st.floats(0.0, 3.0).map(lambda s: f"zipf:{s:.3f}"))


@settings(max_examples=200, deadline=None)
@given(ek=experts_k, spec=specs, seed=st.integers(0, 5))
def test_inclusion_probabilities_are_valid(ek, spec, seed):
    experts, top_k = ek
    q = routing.inclusion_probs(spec, experts, top_k, seed)
    assert q.shape == (experts,)
    assert q.sum() == pytest.approx(top_k)
    assert (q >= 0).all() and (q <= 1 + 1e-12).all()


@settings(max_examples=100, deadline=None)
@given(shares=st.lists(st.floats(0.01, 100), min_size=2, max_size=64), data=st.data())
def test_capping_keeps_popularity_order(shares, data):
    top_k = data.draw(st.integers(1, len(shares)))
    q = routing.cap_inclusion(np.array(shares), top_k)
    order = np.argsort(shares, kind="stable")
    assert (np.diff(q[order]) >= -1e-12).all()


def test_trace_gives_empirical_inclusion(tmp_path):
    ids = np.array([[0, 1], [0, 2], [0, 3], [1, 2]])
    path = tmp_path / "trace.csv"
    np.savetxt(path, ids, delimiter=",", fmt="%d")
    q = inputs.inclusion_probs(f"trace:{path}", 4, 2)
    assert q.tolist() == [0.75, 0.5, 0.5, 0.25]


@pytest.mark.parametrize("spec,match", [("zipf:x", "bad Zipf exponent"), ("zipf:-1", ">= 0"),
                                        ("gauss", "unknown routing"),
                                        ("probs:1,-1", ">= 0")])
def test_bad_routing_spec(spec, match):
    with pytest.raises(ConfigError, match=match) as err:
        routing.parse_routing(spec)
    assert err.value.field == "routing"


def test_trace_with_wrong_shape_names_file(tmp_path):
    path = tmp_path / "t.csv"
    np.savetxt(path, np.array([[0, 1, 2]]), delimiter=",", fmt="%d")
    with pytest.raises(ConfigError, match="top_k=2") as err:
        inputs.inclusion_probs(f"trace:{path}", 8, 2)
    assert str(path) in str(err.value)


layouts = st.sampled_from([(8, 2), (8, 8), (64, 8), (64, 16), (128, 32), (256, 64)])
kinds = st.sampled_from(["contiguous", "round-robin", "balanced", "replicated:0", "replicated:R"])


@settings(max_examples=150, deadline=None)
@given(layout=layouts, kind=kinds, spec=specs, data=st.data())
def test_placement_invariants(layout, kind, spec, data):
    experts, devices = layout
    if kind == "replicated:R":
        kind = f"replicated:{devices * data.draw(st.integers(1, 3))}"
    q = routing.inclusion_probs(spec, experts, 2)
    p = placement.build_placement(kind, experts, devices, q)
    per_expert_share = np.bincount(p.slot_expert, weights=p.slot_share, minlength=experts)
    assert per_expert_share == pytest.approx(np.ones(experts))  # tokens conserved
    assert (np.bincount(p.slot_device, minlength=devices) == p.slots_per_device).all()
    for d in range(devices):
        ids = p.device_of_expert_slots(d)
        assert len(set(ids.tolist())) == ids.size  # no expert twice on a device
    assert p.device_load(q).sum() == pytest.approx(2.0)


@settings(max_examples=100, deadline=None)
@given(layout=layouts, spec=specs)
def test_replication_lowers_the_hottest_slot(layout, spec):
    experts, devices = layout
    q = routing.inclusion_probs(spec, experts, 2)
    flat = placement.balanced(q, devices)
    rep = placement.replicated(q, devices, devices)
    slot_load = lambda p: q[p.slot_expert] * p.slot_share  # noqa: E731
    assert slot_load(rep).max() <= slot_load(flat).max() + 1e-12


def test_balanced_beats_contiguous_under_skew():
    q = routing.inclusion_probs("zipf:1.2", 256, 8, seed=3)
    loads = {k: placement.build_placement(k, 256, 32, q).device_load(q).max()
             for k in ("contiguous", "balanced", "replicated:32")}
    assert loads["replicated:32"] < loads["balanced"] < loads["contiguous"]


@settings(max_examples=100, deadline=None)
@given(layout=layouts, top_k=st.integers(1, 8), kind=st.sampled_from(["contiguous", "round-robin"]))
def test_device_hit_probability_is_hypergeometric_for_uniform(layout, top_k, kind):
    """P(token reaches device d) = 1 - C(E - E/D, k) / C(E, k) under uniform routing."""
    experts, devices = layout
    q = routing.inclusion_probs("uniform", experts, top_k)
    p = placement.build_placement(kind, experts, devices, q)
    hit = traffic.hit_probability(p.slot_device, devices, p, q, top_k)
    per = experts // devices
    exact = 1 - comb(experts - per, top_k) / comb(experts, top_k)
    assert hit == pytest.approx(np.full(devices, exact), rel=1e-9, abs=1e-12)


def test_explicit_placement_file(tmp_path):
    path = tmp_path / "place.yaml"
    path.write_text("devices:\n  - [0, 1, 2]\n  - [3, 0, 1]\n")
    p = inputs.build_placement(str(path), 4, 2, np.full(4, 0.5))
    assert p.as_lists() == [[0, 1, 2], [3, 0, 1]]
    assert p.replicas().tolist() == [2, 2, 1, 1]


@pytest.mark.parametrize("text,match", [("devices:\n  - [0, 1]\n  - [2]\n", "same number"),
                                        ("devices:\n  - [0, 1]\n  - [1, 2]\n", "missing \\[3\\]"),
                                        ("devices:\n  - [0, 0]\n  - [1, 2]\n", "missing"),
                                        ("layout: []\n", "expected 'devices")])
def test_bad_placement_file_names_file(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        inputs.build_placement(str(path), 4, 2, np.full(4, 0.5))
    assert str(path) in str(err.value)


def test_ep_not_dividing_experts_explains_fix():
    with pytest.raises(ConfigError, match="replicated:R") as err:
        placement.build_placement("contiguous", 8, 3, np.full(8, 0.25))
    assert err.value.field == "ep"
