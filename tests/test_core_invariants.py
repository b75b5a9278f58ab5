"""Physical invariants of the cost model, over many configs."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import moesim
from moesim import predict_many
from moesim.core import placement, routing, traffic

MODELS = ["mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b", "olmoe-1b-7b", "dbrx"]


def _sweep(**fixed) -> pd.DataFrame:
    rows = []
    for model in MODELS:
        experts = moesim.load_model(model).experts
        for ep in (1, 2, 8, 16):
            if experts % ep:
                continue
            for tokens in (1, 7, 64, 512, 4096):
                for routing_spec in ("uniform", "zipf:1.2"):
                    rows.append(dict(model=model, hardware="h100-sxm", tokens=tokens, ep=ep,
                                     routing=routing_spec, **fixed))
    return pd.DataFrame(rows)


def test_never_faster_than_flop_or_byte_floor():
    """time >= FLOPs / peak and >= HBM bytes / peak bandwidth on the slowest device."""
    out = predict_many(_sweep(overlap="none"))
    hw = moesim.load_profile("h100-sxm")
    peak = max(hw.compute.peak_flops_per_s.values())
    assert (out["time_s"] >= out["flops"] / peak).all()
    assert (out["time_s"] >= out["hbm_bytes"] / hw.memory.bandwidth_bytes_per_s).all()


def _faster_profile(tmp_path, section: str, field: str, factor: float) -> str:
    hw = moesim.load_profile("h100-sxm")
    value = getattr(getattr(hw, section), field) * factor
    path = tmp_path / f"h100-{section}-x{factor}.yaml"
    path.write_text(f"name: {path.stem}\ndescription: h100 with more {section}\nbase: h100-sxm\n"
                    f"{section}:\n  {field}: {value}\n")
    return str(path)


@pytest.mark.parametrize("section,field", [("memory", "bandwidth_bytes_per_s"),
                                           ("scale_up", "bandwidth_bytes_per_s"),
                                           ("scale_out", "bandwidth_bytes_per_s")])
def test_more_bandwidth_never_slower(tmp_path, section, field):
    base = _sweep(overlap="none", a2a_kernel="per-expert")
    slow = predict_many(base)
    fast = predict_many(base.assign(hardware=_faster_profile(tmp_path, section, field, 2.0)))
    assert (fast["time_s"] <= slow["time_s"] * (1 + 1e-12)).all()
    assert (fast["time_s"] < slow["time_s"]).any()  # and it matters somewhere


@pytest.mark.parametrize("overlap", ["none", "shared", "two-batch"])
def test_more_tokens_never_less_total_time(overlap):
    frames = []
    for tokens in np.unique(np.geomspace(1, 8192, 40).astype(int)):
        frames.append(_sweep(overlap=overlap).assign(tokens=int(tokens)).drop_duplicates())
    df = pd.concat(frames, ignore_index=True)
    out = predict_many(df)
    key = ["model", "ep", "routing"]
    for _, group in out.sort_values("tokens").groupby(key):
        times = group["time_s"].to_numpy()
        assert (np.diff(times) >= -1e-12 * times[1:]).all(), group[["tokens", "time_s"]]


def test_overlap_never_slower_than_serial():
    base = _sweep()
    serial = predict_many(base.assign(overlap="none"))["time_s"]
    shared = predict_many(base.assign(overlap="shared"))["time_s"]
    assert (shared <= serial + 1e-15).all()


def test_zero_inter_node_bytes_inside_one_node():
    out = predict_many(_sweep())
    inside = out["ep"] <= 8  # h100-sxm: 8 GPUs per NVLink domain
    assert (out.loc[inside, "inter_node_bytes"] == 0).all()
    assert (out.loc[~inside, "inter_node_bytes"] > 0).all()
    assert (out.loc[out["ep"] == 1, "intra_node_bytes"] == 0).all()


def test_all_devices_on_one_node_domain_gb200():
    r = moesim.predict("deepseek-v3", "gb200-nvl72", tokens=64, ep=64)
    assert r.comm_bytes["inter_node"] == 0 and r.comm_bytes["intra_node"] > 0


@settings(max_examples=60, deadline=None)
@given(kernel=st.sampled_from(traffic.A2A_KERNELS), ep=st.sampled_from([2, 4, 8, 16, 32]),
       spec=st.sampled_from(["uniform", "zipf:0.8", "zipf:1.5"]),
       place=st.sampled_from(["contiguous", "round-robin", "balanced", "replicated:32"]),
       domain=st.sampled_from([1, 4, 8]), tokens=st.integers(1, 5000))
def test_dispatch_bytes_conserved(kernel, ep, spec, place, domain, tokens):
    """Summed over devices, what is sent equals what is received, per link class."""
    q = routing.inclusion_probs(spec, 64, 6)
    p = placement.build_placement(place, 64, ep, q)
    copies = traffic.copies_per_token(kernel, p, q, 6, 4, 2, domain)
    vol = traffic.device_volumes(copies, np.array([float(tokens)]), domain, kernel)
    for link in ("intra", "inter"):
        assert vol[f"send_{link}"].sum() == pytest.approx(vol[f"recv_{link}"].sum(), rel=1e-9,
                                                          abs=1e-9)
    if kernel == "per-expert":  # every (token, expert) pair not on its own device crosses a link
        total = tokens * ep * 6 * (1 - 1 / ep) if place in ("contiguous", "round-robin") and \
            spec == "uniform" else None
        if total is not None:
            assert vol["send_intra"].sum() + vol["send_inter"].sum() == pytest.approx(total)


def test_skew_costs_time_and_replication_recovers_it():
    uniform = moesim.predict("deepseek-v3", "h100-sxm", tokens=4096, ep=64)
    skewed = moesim.predict("deepseek-v3", "h100-sxm", tokens=4096, ep=64, routing="zipf:1.2")
    fixed = moesim.predict("deepseek-v3", "h100-sxm", tokens=4096, ep=64, routing="zipf:1.2",
                           placement="replicated:64")
    assert skewed.time_s > 1.2 * uniform.time_s
    assert skewed.load_imbalance > 2 * fixed.load_imbalance
    assert fixed.time_s < skewed.time_s


def test_expected_max_load_matches_monte_carlo():
    """The Gaussian expected-max approximation sits within 5 % of the sampled mean."""
    for spec in ("uniform", "zipf:1.0"):
        exp = moesim.predict("qwen3-30b-a3b", "h100-sxm", tokens=256, ep=16, routing=spec)
        mc = moesim.predict("qwen3-30b-a3b", "h100-sxm", tokens=256, ep=16, routing=spec,
                            mode="montecarlo", samples=300)
        assert exp.load_imbalance == pytest.approx(mc.load_imbalance, rel=0.05)
        assert exp.time_s == pytest.approx(mc.time_s, rel=0.05)
        assert mc.extra["time_p99_s"] >= mc.extra["time_p50_s"]


def test_fp8_dispatch_halves_payload_bytes():
    bf16 = moesim.predict("deepseek-v3", "h100-sxm", tokens=128, ep=16, dispatch_dtype="bf16")
    fp8 = moesim.predict("deepseek-v3", "h100-sxm", tokens=128, ep=16, dispatch_dtype="fp8")
    assert fp8.breakdown_s["dispatch"] < 0.6 * bf16.breakdown_s["dispatch"]


def test_trace_monte_carlo_agrees_with_its_expectation(tmp_path):
    """A trace drawn from zipf:1.0 gives the same layer time through its empirical
    inclusion probabilities (expected mode) and through windows of real rows (Monte Carlo)."""
    rng = np.random.default_rng(0)
    q = routing.inclusion_probs("zipf:1.0", 64, 8)
    ids = np.array([rng.choice(64, 8, replace=False, p=q / 8) for _ in range(4000)])
    path = tmp_path / "trace.npy"
    np.save(path, ids)
    for kernel in ("per-expert", "per-device"):
        kw = dict(tokens=128, ep=8, routing=f"trace:{path}", a2a_kernel=kernel)
        exp = moesim.predict("olmoe-1b-7b", "h100-sxm", **kw)
        mc = moesim.predict("olmoe-1b-7b", "h100-sxm", mode="montecarlo", samples=40, **kw)
        assert mc.time_s == pytest.approx(exp.time_s, rel=0.06)
        assert mc.breakdown_s["dispatch"] == pytest.approx(exp.breakdown_s["dispatch"], rel=0.08)


def test_all_to_all_v_adds_count_exchange_and_receive_regroup():
    """torch all_to_all_single with uneven splits: same bytes as per-expert, plus one latency
    in dispatch and a regroup pass in permute/unpermute; identical on one device."""
    kw = dict(tokens=256, ep=8)
    a = moesim.predict("olmoe-1b-7b", "h100-sxm", a2a_kernel="per-expert", **kw)
    b = moesim.predict("olmoe-1b-7b", "h100-sxm", a2a_kernel="all-to-all-v", **kw)
    hw = moesim.load_profile("h100-sxm")
    extra = hw.scale_up.latency_s + hw.compute.launch_overhead_s
    assert b.breakdown_s["dispatch"] == pytest.approx(a.breakdown_s["dispatch"] + extra)
    assert b.breakdown_s["combine"] == pytest.approx(a.breakdown_s["combine"])
    assert b.breakdown_s["permute"] > a.breakdown_s["permute"]
    assert b.comm_bytes == a.comm_bytes
    one = [moesim.predict("olmoe-1b-7b", "h100-sxm", tokens=256, a2a_kernel=k).time_s
           for k in ("per-expert", "all-to-all-v")]
    assert one[0] == pytest.approx(one[1])


def test_overlap_hides_its_share_of_the_exchange():
    """h = 1: shared == serial - min(dispatch, shared), two-batch == 2 max(compute, comm) at T/2;
    h = 0 (the ranks' own cores move the bytes): every phase in sequence; h = 0.5 halfway."""
    from moesim.core.layer import combine_phases

    phases = {p: np.full((1, 2), v) for p, v in zip(
        ("router", "permute", "dispatch", "experts", "shared_experts", "combine", "unpermute"),
        (1.0, 1.0, 3.0, 4.0, 2.0, 3.0, 1.0))}
    half = {p: v / 2 for p, v in phases.items()}
    code = np.array([0, 1, 2])
    rows = {p: np.repeat(v, 3, axis=0) for p, v in phases.items()}
    hidden = combine_phases(rows, code, {p: v for p, v in half.items()})
    shared_cores = combine_phases(rows, code, {p: v for p, v in half.items()}, hides=0.0)
    assert hidden[:, 0].tolist() == [15.0, 13.0, 2 * max(4.5, 3.0)]
    assert shared_cores[:, 0].tolist() == [15.0, 15.0, 2 * (4.5 + 3.0)]
    half_way = combine_phases(rows, code, {p: v for p, v in half.items()}, hides=0.5)
    assert half_way[:, 0].tolist() == [15.0, 14.0, 2 * (4.5 + 3.0 - 1.5)]
