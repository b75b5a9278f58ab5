"""Expected-mode quantities against exact computations on the count distribution and against
moesim's own Monte Carlo, in the regimes where means mislead: small batches (drop rate), tile
edges (row tiles) and group-limited routing (devices hit). The references are computed here
from first principles (binomial pmf sums, brute-force routing), not from moesim's formulas."""
import numpy as np
import pytest
from scipy.stats import binom

import moesim
from moesim.core import gemm, loads, placement, routing, traffic


def exact_drop_rate(tokens_total: int, p: float, cap: int) -> float:
    """E[(X - cap)+] / E[X] for X ~ Binomial(tokens_total, p) by summing the pmf."""
    x = np.arange(tokens_total + 1)
    return float((np.maximum(x - cap, 0) * binom.pmf(x, tokens_total, p)).sum()
                 / (tokens_total * p))


# (model, tokens per device, ep, capacity factor, experts, top_k): the numbers
DROP_CASES = [("deepseek-v3", 64, 32, 1.0, 256, 8), ("deepseek-v3", 64, 32, 1.25, 256, 8),
              ("qwen3-30b-a3b", 16, 8, 1.0, 128, 8)]


@pytest.mark.parametrize("model,tokens,ep,cf,experts,top_k", DROP_CASES)
def test_small_batch_drop_rate_is_the_exact_binomial(model, tokens, ep, cf, experts, top_k):
    total = tokens * ep
    cap = int(np.floor(cf * total * top_k / experts))
    exact = exact_drop_rate(total, top_k / experts, cap)
    r = moesim.predict(model, "h100-sxm", tokens=tokens, ep=ep, drop_tokens=True,
                       capacity_factor=cf)
    assert r.drop_rate == pytest.approx(exact, rel=0.02)
    mc = moesim.predict(model, "h100-sxm", tokens=tokens, ep=ep, drop_tokens=True,
                        capacity_factor=cf, mode="montecarlo", samples=400)
    assert r.drop_rate == pytest.approx(mc.drop_rate, rel=0.1, abs=5e-4)


def exact_row_tiles(tokens_total: int, p: float, tile_m: int, slots: int) -> float:
    x = np.arange(tokens_total + 1)
    return slots * float((np.ceil(x / tile_m) * binom.pmf(x, tokens_total, p)).sum())


@pytest.mark.parametrize("tokens", [1, 16, 200, 1024, 4096, 4160])
def test_expected_row_tiles_are_the_mean_of_the_ceiling(tokens):
    """Mixtral EP 1, uniform top-2: E[sum_e ceil(X_e / tile_m)], X_e ~ Binomial(T, 1/4);
    at 1,024 tokens that is 19.87 row tiles, not 8 * ceil(256 / 128) = 16."""
    tile_m = moesim.load_profile("h100-sxm").compute.gemm_tile_m
    q = routing.inclusion_probs("uniform", 8, 2)
    place = placement.contiguous(8, 1)
    vol = {k: np.zeros((1, 1)) for k in ("send_intra", "send_inter", "recv_intra", "recv_inter")}
    counts, hit, _, _ = loads.expected_loads(q, place, np.array([float(tokens)]), vol)
    load = gemm.DeviceLoad.from_slots(counts, hit, place.slot_device, 1, tile_m)
    exact = exact_row_tiles(tokens, 0.25, tile_m, 8)
    assert load.row_tiles[0, 0] == pytest.approx(exact, rel=1e-6)
    if tokens == 1024:
        assert exact == pytest.approx(19.87, abs=0.01)


def test_no_sawtooth_at_a_tile_edge():
    """4,096 -> 4,160 tokens (+1.6 %) must not jump the expert time by a whole tile row."""
    t = [moesim.predict("mixtral-8x7b", "h100-sxm", tokens=n).breakdown_s["experts"]
         for n in (4096, 4160)]
    assert t[1] / t[0] - 1 < 0.03


@pytest.mark.parametrize("tokens", [8, 64, 1024, 4096])
def test_expected_and_monte_carlo_experts_time_agree(tokens):
    """Small-batch and tile-edge regimes, EP 1 (no busiest-device approximation involved)."""
    exp = moesim.predict("mixtral-8x7b", "h100-sxm", tokens=tokens)
    mc = moesim.predict("mixtral-8x7b", "h100-sxm", tokens=tokens, mode="montecarlo", samples=300)
    assert exp.breakdown_s["experts"] == pytest.approx(mc.breakdown_s["experts"], rel=0.03)


def deepseek_devices_hit(ep: int, tokens: int = 40_000, seed: int = 7) -> float:
    """Brute-force DeepSeek-V3 routing with exchangeable scores: group score = sum of its top-2
    expert scores, keep the top-4 of 8 groups, then the top-8 experts among the kept groups;
    distinct devices per token (contiguous placement)."""
    rng = np.random.default_rng(seed)
    s = rng.random((tokens, 256))
    gscore = np.sort(s.reshape(tokens, 8, 32), axis=2)[:, :, -2:].sum(axis=2)
    kept = np.argsort(-gscore, axis=1)[:, :4]
    mask = np.zeros((tokens, 8), dtype=bool)
    mask[np.arange(tokens)[:, None], kept] = True
    s = np.where(np.repeat(mask, 32, axis=1), s, -np.inf)
    top = np.argpartition(-s, 8, axis=1)[:, :8]
    dev = np.sort(top // (256 // ep), axis=1)
    return float(((np.diff(dev, axis=1) > 0).sum(axis=1) + 1).mean())


@pytest.mark.parametrize("ep", [16, 32, 64])
def test_group_limited_devices_hit_per_token(ep):
    q = routing.inclusion_probs("uniform", 256, 8)
    place = placement.contiguous(256, ep)
    hits = traffic.hit_probability(place.slot_device, ep, place, q, 8, 8, 4)
    assert hits.sum() == pytest.approx(deepseek_devices_hit(ep), rel=0.006)


def test_row_tile_memo_returns_the_computation_and_stays_bounded(monkeypatch):
    """The memo of row tiles (a sweep over profiles with one tile height asks twice) gives
    exactly the direct evaluation, read-only, and never holds more than its byte bound."""
    import moesim.core.counts as counts

    n = np.array([40.0, 40.0, 7.5]); p = np.array([0.1, 0.3, 0.9]); cap = np.full(3, np.inf)
    direct = counts._row_tiles(n, p, cap, 16)
    monkeypatch.setattr(counts, "_TILE_MEMO", counts.OrderedDict())
    first = counts._memo_row_tiles(n, p, cap, 16)
    again = counts._memo_row_tiles(n.copy(), p.copy(), cap.copy(), 16)
    assert again is first and np.array_equal(first, direct) and not first.flags.writeable
    assert not np.array_equal(counts._memo_row_tiles(n, p, cap, 8), first)  # tile is in the key
    monkeypatch.setattr(counts, "_TILE_MEMO_BYTES", 0)
    counts._memo_row_tiles(n, p * 0.5, cap, 16)
    assert len(counts._TILE_MEMO) == 0


def test_row_tiles_of_one_distribution_per_row_match_the_per_slot_evaluation():
    """Uniform routing puts one distribution on every slot of a row; row_tiles then evaluates
    one column (its fast path), which must equal the slot-by-slot evaluation."""
    from moesim.core.counts import SlotCounts, _row_tiles

    trials = np.array([[3.0], [64.0], [1000.0], [64.0]])
    prob = np.repeat(np.array([[0.01], [0.25], [0.1], [0.25]]), 6, axis=1)
    tiles = SlotCounts(trials, prob).row_tiles(16)
    n = np.broadcast_to(trials, prob.shape).ravel()
    direct = _row_tiles(n, prob.ravel(), np.full(n.shape, np.inf), 16).reshape(prob.shape)
    assert tiles.shape == prob.shape and np.array_equal(tiles, direct)
    skewed = prob * np.linspace(0.5, 1.5, 6)  # slots differ: the per-slot path
    n2 = np.broadcast_to(trials, skewed.shape).ravel()
    assert np.array_equal(SlotCounts(trials, skewed).row_tiles(16), _row_tiles(
        n2, skewed.ravel(), np.full(n2.shape, np.inf), 16).reshape(skewed.shape))
