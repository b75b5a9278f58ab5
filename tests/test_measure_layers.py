"""Single-device MoE layer: equals the per-token reference, phases, forced and grouped routing."""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from moesim.config import MoEModel  # noqa: E402
from moesim.measure.experts import grouped_mm_supported  # noqa: E402
from moesim.core.routing import inclusion_probs  # noqa: E402
from moesim.measure.forced import forced_topk_ids, sample_inclusion_ids  # noqa: E402
from moesim.measure.layers import MoELayer  # noqa: E402
from moesim.measure.naive import naive_moe  # noqa: E402
from moesim.measure.router import group_mask, select_topk  # noqa: E402
from moesim.harness.timing import NULL_TIMER  # noqa: E402
from moesim.harness.timing import PhaseTimer as WallTimer  # noqa: E402

SMALL = dict(hidden=16, expert_ffn=8, experts=8, top_k=2)
MODELS = {
    "softmax-gated": MoEModel(**SMALL),
    "softmax-gelu-shared": MoEModel(**SMALL, gated=False, shared_experts=2, shared_expert_ffn=8),
    "sigmoid-groups-shared": MoEModel(**{**SMALL, "top_k": 3}, router="sigmoid", num_groups=4,
                                      topk_groups=2, shared_experts=1, shared_expert_ffn=16),
    "sigmoid-gelu-groups": MoEModel(**SMALL, gated=False, router="sigmoid", num_groups=8,
                                    topk_groups=3),
}


def _x(model: MoEModel, num_tokens: int, dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_tokens, model.hidden, generator=gen, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("norm_topk", [True, False])
def test_matches_naive_float64(name, norm_topk):
    model = MODELS[name]
    layer = MoELayer(model, dtype="float64", seed=1, norm_topk=norm_topk)
    x = _x(model, 24, torch.float64)
    torch.testing.assert_close(layer(x), naive_moe(layer, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_grouped_gemm_float32_matches_naive_and_loop(name):
    model = MODELS[name]
    grouped = MoELayer(model, dtype="float32", seed=2, gemm="grouped")
    loop = MoELayer(model, dtype="float32", seed=2, gemm="loop")
    assert (grouped.experts.gemm, loop.experts.gemm) == ("grouped", "loop")
    x = _x(model, 40, torch.float32)
    out = grouped(x)
    torch.testing.assert_close(out, naive_moe(grouped, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, loop(x), rtol=1e-5, atol=1e-5)


def test_bf16_layer_close_to_float64():
    model = MODELS["sigmoid-groups-shared"]
    x = _x(model, 32, torch.float64)
    exact = MoELayer(model, dtype="float64", seed=3)
    rough = MoELayer(model, dtype="bf16", seed=3)
    ids, _ = exact.router(x)                     # same experts despite bf16 score rounding
    out = rough(x.to(torch.bfloat16), topk_idx=ids)
    torch.testing.assert_close(out.double(), exact(x, topk_idx=ids), rtol=0.05, atol=0.05)


def test_grouped_mm_supported_on_cpu():
    cpu = torch.device("cpu")
    assert grouped_mm_supported(torch.float32, cpu, 16, 8)
    assert grouped_mm_supported(torch.bfloat16, cpu, 16, 8)
    assert not grouped_mm_supported(torch.float64, cpu, 16, 8)
    assert not grouped_mm_supported(torch.float32, cpu, 16, 6)     # 24-byte rows
    with pytest.raises(ValueError, match="_grouped_mm"):
        MoELayer(MODELS["softmax-gated"], dtype="float64", gemm="grouped")
    with pytest.raises(ValueError, match="gemm"):
        MoELayer(MODELS["softmax-gated"], dtype="float32", gemm="cutlass")


def test_zero_tokens():
    layer = MoELayer(MODELS["sigmoid-groups-shared"], dtype="float32")
    assert layer(torch.empty(0, 16)).shape == (0, 16)


# --- phases ---------------------------------------------------------------------------------

def test_wall_timer_records_single_device_phases_with_fake_clock():
    timer = WallTimer(clock=itertools.count().__next__)      # each reading 1 s after the last
    layer = MoELayer(MODELS["sigmoid-groups-shared"], dtype="float32")
    x = _x(layer.model, 8, torch.float32)
    layer(x, timer)
    layer(x, timer)
    assert timer.order == ["router", "permute", "experts", "unpermute", "shared_experts"]
    assert timer.seconds == {name: 2.0 for name in timer.order}    # 1 fake second per entry
    assert timer.calls == {name: 2 for name in timer.order}
    assert timer.total_seconds() == 10.0
    plain = WallTimer()
    MoELayer(MODELS["softmax-gated"], dtype="float32")(x, plain)
    assert "shared_experts" not in plain.seconds and all(s >= 0 for s in plain.seconds.values())


def test_unknown_phase_is_an_error():
    with pytest.raises(ValueError, match="unknown phase"):
        with WallTimer().phase("route"):
            pass
    with pytest.raises(ValueError, match="unknown phase"):
        NULL_TIMER.phase("expert")


# --- forced routing -------------------------------------------------------------------------

def test_forced_routing_counts_and_output():
    model = MODELS["sigmoid-groups-shared"]
    ids = forced_topk_ids("zipf:1.5", model.experts, model.top_k, 50, seed=4)
    layer = MoELayer(model, dtype="float64", routing=ids)
    x = _x(model, 50, torch.float64)
    out = layer(x)
    expected = np.bincount(ids.ravel(), minlength=model.experts)
    assert layer.last_tokens_per_expert.tolist() == expected.tolist()
    torch.testing.assert_close(out, naive_moe(layer, x, topk_idx=ids), rtol=1e-12, atol=1e-12)
    picked, weights = layer.router(x, torch.from_numpy(ids))
    assert torch.equal(picked, torch.from_numpy(ids))
    torch.testing.assert_close(weights.sum(1), torch.ones(50, dtype=torch.float64))


def test_forced_routing_callable_and_per_call_override():
    model = MODELS["softmax-gated"]
    layer = MoELayer(model, dtype="float32",
                     routing=lambda n: np.tile([[7, 0]], (n, 1)))
    layer(_x(model, 5, torch.float32))
    assert layer.last_tokens_per_expert.tolist() == [5, 0, 0, 0, 0, 0, 0, 5]
    layer(_x(model, 3, torch.float32), topk_idx=np.tile([[1, 2]], (3, 1)))
    assert layer.last_tokens_per_expert.tolist() == [0, 3, 3, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("ids, match", [
    ([[0, 0], [1, 2]], "repeats"), ([[0, 8], [1, 2]], "lie in"), ([[0, 1]], "shape"),
    ([[0.0, 1.0], [1.0, 2.0]], "integers")])
def test_bad_forced_ids_are_errors(ids, match):
    layer = MoELayer(MODELS["softmax-gated"], dtype="float32")
    with pytest.raises(ValueError, match=match):
        layer(_x(layer.model, 2, torch.float32), topk_idx=np.array(ids))


def test_forced_ids_distinct_deterministic_and_only_where_q_is_positive():
    q = inclusion_probs("zipf:1.0", 16, 4, seed=2)
    ids = sample_inclusion_ids(q, 2000, 4, seed=7)
    assert ids.shape == (2000, 4) and ids.dtype == np.int64
    assert np.all(np.diff(np.sort(ids, axis=1), axis=1) > 0)
    assert np.array_equal(ids, sample_inclusion_ids(q, 2000, 4, seed=7))
    only = sample_inclusion_ids(np.array([0.0, 1.0, 0.0, 1.0]), 10, 2, seed=0)
    assert set(only.ravel()) == {1, 3}
    with pytest.raises(ValueError, match="sum"):
        sample_inclusion_ids(np.array([0.0, 1.0, 0.0]), 10, 2, seed=0)


# --- group-limited routing ------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(num_groups=st.integers(1, 5), per_group=st.integers(1, 4), data=st.data(),
       sigmoid=st.booleans(), seed=st.integers(0, 2**16))
def test_group_limited_routing_stays_in_best_groups(num_groups, per_group, data, sigmoid, seed):
    experts = num_groups * per_group
    topk_groups = data.draw(st.integers(1, num_groups))
    top_k = data.draw(st.integers(1, topk_groups * per_group))
    logits = torch.randn(12, experts, generator=torch.Generator().manual_seed(seed),
                         dtype=torch.float64)
    scores = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, -1)
    ids = select_topk(scores, top_k, num_groups, topk_groups)
    groups = scores.view(12, num_groups, per_group)
    group_score = groups.sort(-1, descending=True).values[..., :2].sum(-1)
    best = group_score.argsort(-1, descending=True)[:, :topk_groups]
    for t in range(12):
        picked = set(ids[t].tolist())
        assert len(picked) == top_k
        assert {e // per_group for e in picked} <= set(best[t].tolist())
    assert group_mask(scores, num_groups, topk_groups).sum(1).tolist() == \
        [topk_groups * per_group] * 12


def test_learned_group_routing_in_layer_uses_one_group():
    groups = MoEModel(**SMALL, router="sigmoid", num_groups=4, topk_groups=1)
    ids, _ = MoELayer(groups, dtype="float32", seed=5).router(_x(groups, 64, torch.float32))
    assert torch.all(ids[:, 0] // 2 == ids[:, 1] // 2)         # both experts from one group


def test_forced_module_imports_without_torch():
    code = "import sys, moesim.measure.forced, moesim.measure; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
