"""Placement search: brute-force optimality on small cases, the proxy against moesim.predict,
file round trips, the pluggable interface, movement accounting and node-limited placement."""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import moesim
from moesim import inputs
from moesim.config import ConfigError, MoEModel, load_profile
from moesim.core.placement import contiguous
from moesim.core.routing import inclusion_probs
from moesim.placement_search import comparison as cmp
from moesim.placement_search import strategies as strat
from moesim.placement_search.files import read_placement, write_placement
from moesim.placement_search.layout import Layout, from_device_lists
from moesim.placement_search.movement import expert_bytes, movement_cost, transfer_plan
from moesim.placement_search.proxy import device_costs, time_cost
from moesim.placement_search.traces import drift_loads, load_batch_loads, save_batch_loads

SMALL = MoEModel(name="small-moe", hidden=1024, expert_ffn=1024, experts=8, top_k=2)


def partitions(items: list[int], size: int):
    """Every partition of ``items`` into unordered blocks of ``size``."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for others in itertools.combinations(rest, size - 1):
        remaining = [x for x in rest if x not in others]
        for tail in partitions(remaining, size):
            yield [[first, *others]] + tail


def brute_force_max_load(loads: np.ndarray, num_devices: int) -> float:
    per = loads.size // num_devices
    blocks = np.array(list(partitions(list(range(loads.size)), per)))  # [P, D, per]
    return float(loads[blocks].sum(-1).max(-1).min())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.01, 100.0), min_size=8, max_size=8))
def test_local_search_is_optimal_for_8_experts_on_4_devices(values):
    loads = np.array(values)
    found = device_costs(strat.greedy_local(loads, Layout(4)), loads).max()
    assert found == pytest.approx(brute_force_max_load(loads, 4), rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_local_search_near_optimal_for_12_experts_on_3_devices(seed):
    loads = np.random.default_rng(seed).pareto(1.5, 12) + 0.1
    greedy = device_costs(strat.greedy(loads, Layout(3)), loads).max()
    local = device_costs(strat.greedy_local(loads, Layout(3)), loads).max()
    best = brute_force_max_load(loads, 3)
    assert best - 1e-12 <= local <= greedy + 1e-12
    assert local <= 1.03 * best


def test_search_matches_brute_force_predicted_time():
    """Every way to put 8 experts on 4 devices (one node), timed by moesim.predict: the
    comparison's best placement is within 1% of the fastest."""
    q = inclusion_probs("zipf:1.5", 8, 2, seed=3)
    problem = cmp.make_problem(SMALL, "h100-sxm", 256, 4)
    times = [problem.predict(from_device_lists(p, 8), q).time_s
             for p in partitions(list(range(8)), 2)]
    result = cmp.compare(problem, q, drift=0)
    assert result.table["time_s"].min() <= 1.01 * min(times)
    assert result.table.set_index("strategy").loc["contiguous", "speedup"] == pytest.approx(1.0)


def test_time_proxy_ranks_placements_like_predict():
    """The local-search proxy orders random placements as moesim.predict does."""
    from scipy.stats import spearmanr

    model = moesim.load_model("deepseek-v3")
    q = inclusion_probs("zipf:1.0", 256, 8, seed=0)
    hw = load_profile("h800-sxm")
    proxy = time_cost(model, hw, 128, 32)
    problem = cmp.make_problem(model, "h800-sxm", 128, 32)
    rng = np.random.default_rng(0)
    proxies, times = [], []
    for _ in range(12):
        place = from_device_lists(rng.permutation(256).reshape(32, 8).tolist(), 256)
        proxies.append(device_costs(place, q, proxy.for_loads(q)).max())
        times.append(problem.predict(place, q).time_s)
    assert spearmanr(proxies, times).statistic > 0.8


def test_replication_and_local_search_never_hurt_the_proxy():
    q = inclusion_probs("zipf:1.2", 64, 4, seed=1)
    base = device_costs(strat.greedy(q, Layout(16, 4)), q).max()
    for r in (16, 48):
        layout = Layout(16, 4, r)
        greedy = device_costs(strat.greedy(q, layout), q).max()
        local = device_costs(strat.greedy_local(q, layout), q).max()
        assert local <= greedy + 1e-12 <= base + 1e-12


@pytest.mark.parametrize("name", ["eplb", "eplb+ls"])
def test_hierarchical_keeps_each_group_on_one_node(name):
    loads = inclusion_probs("zipf:1.2", 64, 8, seed=2)
    layout = Layout(16, domain_size=4, redundant_slots=16, num_groups=8, topk_groups=4)
    assert layout.node_limited(64)
    place = strat.run_strategy(name, loads, layout)
    node = layout.node_of_device()[place.slot_device]
    group = place.slot_expert // 8
    for g in range(8):
        assert np.unique(node[group == g]).size == 1, f"group {g} spans nodes"
    assert place.replicas().sum() == 64 + 16


def test_hierarchical_falls_back_to_global_when_groups_do_not_divide():
    loads = inclusion_probs("zipf:1.0", 64, 8, seed=2)
    layout = Layout(24, domain_size=8, redundant_slots=8, num_groups=8, topk_groups=4)
    assert not layout.node_limited(64)
    assert strat.eplb_hierarchical(loads, layout).as_lists() == strat.greedy(loads, layout).as_lists()


def test_user_strategy_is_pluggable_and_compared():
    def reversed_contiguous(loads, layout):
        per = loads.size // layout.num_devices
        ids = list(range(loads.size))[::-1]
        return from_device_lists([ids[d * per:(d + 1) * per] for d in range(layout.num_devices)],
                                 loads.size)

    q = inclusion_probs("zipf:1.2", 8, 2, seed=0)
    problem = cmp.make_problem(SMALL, "h100-sxm", 64, 4)
    result = cmp.compare(problem, q, ["greedy", reversed_contiguous], drift=0)
    assert set(result.table["strategy"]) == {"contiguous", "greedy", "reversed_contiguous"}
    strat.register("test-reversed", reversed_contiguous)
    try:
        assert strat.resolve("test-reversed")[1] is reversed_contiguous
    finally:
        strat.STRATEGIES.pop("test-reversed")
    with pytest.raises(ConfigError, match="not a Placement"):
        strat.run_strategy(lambda loads, layout: None, q, Layout(4))
    with pytest.raises(ConfigError, match="did you mean|expected one of"):
        strat.resolve("gredy")


def test_movement_cost_accounting():
    model, hw = moesim.load_model("deepseek-v3"), load_profile("h800-sxm")
    a = contiguous(256, 16)
    assert movement_cost(a, a, model, hw).bytes == 0.0
    assert movement_cost(a, a, model, hw).time_s == 0.0
    lists = a.as_lists()
    lists[0][0], lists[1][0] = lists[1][0], lists[0][0]  # swap inside node 0
    lists[2][0], lists[15][0] = lists[15][0], lists[2][0]  # swap across nodes
    b = from_device_lists(lists, 256)
    move = movement_cost(a, b, model, hw)
    assert move.copies == 4
    assert move.bytes == pytest.approx(4 * expert_bytes(model))
    assert move.intra_node_bytes == pytest.approx(2 * expert_bytes(model))
    assert move.inter_node_bytes == pytest.approx(2 * expert_bytes(model))
    per = expert_bytes(model) / (hw.scale_out.bandwidth_bytes_per_s * 0.85)
    assert move.time_s >= per
    vol = transfer_plan(a, b, 8)
    assert vol["recv_inter"][15] == 1 and vol["send_inter"][2] == 1


def test_movement_prefers_a_source_in_the_same_node():
    old = from_device_lists([[0, 1], [2, 3], [0, 3], [1, 2]], 4)  # expert 0 on nodes 0 and 1
    new = from_device_lists([[0, 1], [0, 2], [0, 3], [1, 2]], 4)  # device 1 needs expert 0
    vol = transfer_plan(old, new, domain_size=2)  # nodes {0, 1} and {2, 3}
    assert vol["recv_intra"][1] == 1 and vol["send_intra"][0] == 1
    assert vol["recv_inter"].sum() == 0 and vol["recv_intra"].sum() == 1


def test_batch_loads_round_trip(tmp_path):
    loads = np.random.default_rng(0).integers(0, 50, size=(5, 3, 16)).astype(float)
    path = tmp_path / "loads.npz"
    save_batch_loads(path, loads)
    assert np.array_equal(load_batch_loads(f"{path}@2", 16), loads[:, 2, :])
    save_batch_loads(path, loads[:, 0, :])
    assert np.array_equal(load_batch_loads(f"trace:{path}", 16), loads[:, 0, :])
    with pytest.raises(ConfigError):
        load_batch_loads(path, 8)


def test_token_trace_is_cut_into_batches(tmp_path):
    rng = np.random.default_rng(1)
    ids = np.stack([rng.choice(16, 2, replace=False) for _ in range(400)])
    path = tmp_path / "ids.npy"
    np.save(path, ids)
    loads = load_batch_loads(str(path), 16, batch_tokens=100)
    assert loads.shape == (4, 16)
    assert (loads.sum(axis=1) == 200).all()
    assert np.array_equal(loads.sum(axis=0), np.bincount(ids.ravel(), minlength=16))


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_placement_file_round_trip(tmp_path, suffix):
    q = inclusion_probs("zipf:1.2", 64, 4, seed=0)
    place = strat.greedy_local(q, Layout(8, 8, 8))
    path = write_placement(tmp_path / f"p{suffix}", place, {"strategy": "greedy+ls",
                                                            "predicted_time_s": np.float64(1e-3)})
    back, meta = read_placement(path, 64)
    assert back.as_lists() == place.as_lists()
    assert meta["strategy"] == "greedy+ls" and meta["predicted_time_s"] == 1e-3
    again = inputs.build_placement(str(path), 64, 8, q)  # what predict/scenarios use
    assert np.allclose(again.device_load(q), place.device_load(q))


def test_compare_on_a_trace_reports_staleness():
    rng = np.random.default_rng(0)
    base = inclusion_probs("zipf:1.2", 8, 2, seed=0)
    loads = np.stack([rng.multinomial(512, base / 2) for _ in range(4)]).astype(float)
    problem = cmp.make_problem(SMALL, "h100-sxm", 64, 4, redundant=4)
    table = cmp.compare(problem, loads, ["greedy"], horizon=3).table
    row = table[(table["strategy"] == "greedy") & (table["redundant"] == 4)].iloc[0]
    assert np.isfinite(row["stale_time_s"]) and np.isfinite(row["fresh_time_s"])
    assert row["max_copies"] >= 2
    assert "greedy" in cmp.format_table(table)


def test_drift_keeps_inclusion_probabilities_valid():
    q = inclusion_probs("zipf:1.2", 32, 4, seed=0)
    later = drift_loads(q, 0.5, 4, samples=3, seed=1)
    assert later.shape == (3, 32)
    assert np.allclose(later.sum(axis=1), 4) and (later <= 1 + 1e-12).all()


def _place_parser():
    from moesim.cli import place

    parser = argparse.ArgumentParser(prog="moesim")
    place.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_place_writes_a_file_predict_reads(tmp_path, capsys):
    out = tmp_path / "placement.yaml"
    args = _place_parser().parse_args(
        ["place", "--model", "deepseek-v3", "--hardware", "h800-sxm", "--ep", "32", "--tokens",
         "128", "--routing", "zipf:1.2", "--redundant", "32", "--strategy", "greedy,eplb",
         "--drift-samples", "1", "--out", str(out), "--csv", str(tmp_path / "t.csv")])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "best:" in text and "contiguous" in text
    _, meta = read_placement(out, 256)
    assert meta["strategy"] in ("greedy", "eplb")
    again = moesim.predict("deepseek-v3", "h800-sxm", 128, ep=32, routing="zipf:1.2",
                           placement=str(out))
    assert again.time_s == pytest.approx(meta["predicted_time_s"], rel=1e-9)
    assert (tmp_path / "t.csv").is_file()


def test_cli_place_help():
    with pytest.raises(SystemExit) as info:
        _place_parser().parse_args(["place", "--help"])
    assert info.value.code == 0


def test_recorded_trace_layer_as_batches():
    """A ``moesim trace record`` file (tests/data/traces): one layer, cut into batches."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "traces" / "tiny-mixtral.npz"
    loads = load_batch_loads(f"trace:{path}@1", 8, batch_tokens=128)
    assert loads.shape == (8, 8) and (loads.sum(axis=1) == 256).all()
    with pytest.raises(ConfigError, match="LAYER"):
        load_batch_loads(str(path), 8, batch_tokens=128)
    with pytest.raises(ConfigError):
        load_batch_loads(str(path.with_name("missing.npz")), 8)


def test_compare_skips_budgets_ep_does_not_divide():
    """EP 48 holds 256 experts only with 32 redundant slots: no contiguous baseline."""
    problem = cmp.make_problem("deepseek-v3", "h800-sxm", 128, 48, redundant=32)
    result = cmp.compare(problem, inclusion_probs("zipf:1.0", 256, 8, seed=0), ["greedy"],
                         drift=0)
    assert list(result.table["redundant"]) == [32]
    assert result.best() == ("greedy", 32)
    with pytest.raises(ConfigError, match="must divide"):
        cmp.compare(cmp.make_problem("deepseek-v3", "h800-sxm", 128, 48, redundant=8),
                    inclusion_probs("zipf:1.0", 256, 8, seed=0))
