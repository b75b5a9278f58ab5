"""Hand-computed golden cases and published numbers.

The golden cases use ``tests/data/profiles/golden-gpu.yaml``: 100 units, 1 PFLOP/s bf16, 2 TB/s,
NVLink 400 GB/s, NIC 50 GB/s, 128x128 tiles, all efficiencies 1, no launch overhead or latency.
"""
import numpy as np
import pytest
from scipy.stats import binom

import moesim
from moesim.core import comm, placement, routing, traffic

MIXTRAL = dict(hidden=4096, expert_ffn=14336, experts=8, top_k=2)


def test_decode_token_reads_two_experts_weights(golden_gpu):
    """One Mixtral-8x7B token, EP 1: bound by reading its 2 active experts' weights.

    Expected experts hit: 8 * (1 - (1 - 2/8)**1) = 2.
    Weights: 2 experts x 3 matrices x 4096 x 14336 x 2 B = 704,643,072 B.
    Activations per (token, expert) row: gate/up (4096 + 28672) x 2 = 65,536 B; SwiGLU
    (28672 + 14336) x 2 = 86,016 B; down (14336 + 4096) x 2 = 36,864 B; 188,416 B x 2 rows.
    Compute is below memory: gate/up has 2 x 224 = 448 tiles -> 5 waves x 13.42 us = 67.1 us;
    down has 64 tiles -> 1 wave x 2*128*128*14336 / 1e13 = 47.0 us.
    experts = (704,643,072 + 376,832) B / 2e12 B/s = 352.50995 us.
    """
    r = moesim.predict("mixtral-8x7b", golden_gpu, tokens=1)
    assert r.breakdown_s["experts"] == pytest.approx((704_643_072 + 376_832) / 2e12, rel=1e-9)
    assert r.bottleneck == "experts:memory"
    assert r.experts_hit_per_device == pytest.approx(2.0)
    assert r.breakdown_s["dispatch"] == 0 and r.comm_bytes["inter_node"] == 0


def test_prefill_is_compute_bound_with_wave_quantisation(golden_gpu):
    """4096 Mixtral tokens, EP 1: each expert gets X ~ Binomial(4096, 2/8) tokens, mean 1024.

    Row tiles per expert: E[ceil(X/128)] = 8 + P(X > 1024) = 8.4916 (the mean sits on a tile
    edge, so half the batches pay a ninth tile row), 67.933 over 8 experts.
    gate/up: 67.933 x 224 column tiles = 15,217 tiles -> ceil(152.17) = 153 waves x
      2*128*128*4096 / 1e13 s = 153 x 13.4218 us (memory: (1.879e9 weights + 0.537e9
      activations) / 2e12 = 1208 us: compute-bound).
    down: 67.933 x 32 = 2,174 tiles -> 22 waves x 2*128*128*14336 / 1e13 = 22 x 46.976 us.
    SwiGLU: 8192 rows x (28672 + 14336) x 2 B / 2e12 = 352.3 us.
    """
    r = moesim.predict("mixtral-8x7b", golden_gpu, tokens=4096)
    row_tiles = 8 * (8 + binom.sf(1024, 4096, 0.25))
    assert row_tiles == pytest.approx(67.933, abs=1e-3)
    gate_up = np.ceil(row_tiles * 224 / 100) * 2 * 128 * 128 * 4096 / 1e13
    down = np.ceil(row_tiles * 32 / 100) * 2 * 128 * 128 * 14336 / 1e13
    act = 8192 * (28672 + 14336) * 2 / 2e12
    assert r.breakdown_s["experts"] == pytest.approx(gate_up + down + act, rel=1e-6)
    assert r.bottleneck == "experts:compute"
    # padding and wave quantisation cost 153/143.36 - 1 = 6.7 % over the ideal FLOP time of gate/up
    ideal = 2 * 8192 * 4096 * 28672 / 1e15
    assert gate_up / ideal == pytest.approx(153 / 143.36, rel=1e-9)


def test_dispatch_bytes_and_time_two_nodes(golden_gpu):
    """DeepSeek-V3 shape, EP 16 over 2 nodes of 8, 128 tokens/device, fp8 per-expert dispatch.

    Bytes per copy: 7168 + 7168/128*4 = 7392. Uniform q = 8/256; 16 experts per device ->
    0.5 copies per token to each device. Per device: intra 128 x 7 x 0.5 = 448 copies
    (3,311,616 B), inter 128 x 8 x 0.5 = 512 copies (3,784,704 B).
    time = max(3,311,616 / 400e9, 3,784,704 / 50e9) = 75.694 us (network-bound).
    """
    q = routing.inclusion_probs("uniform", 256, 8)
    place = placement.contiguous(256, 16)
    copies = traffic.copies_per_token("per-expert", place, q, 8, 8, 4, domain_size=8)
    vol = traffic.device_volumes(copies, np.array([128.0]), 8, "per-expert")
    assert vol["send_intra"][0] == pytest.approx(np.full(16, 448.0))
    assert vol["send_inter"][0] == pytest.approx(np.full(16, 512.0))
    assert traffic.token_bytes(7168, "fp8") == 7392
    cost = comm.alltoall(vol, 7392.0, up_bytes_per_s=400e9, up_eff=1.0, up_latency_s=0.0,
                         out_bytes_per_s=50e9, out_eff=1.0, out_latency_s=0.0,
                         launch_overhead_s=0.0)
    assert cost.time_s[0, 0] == pytest.approx(3_784_704 / 50e9)


def test_group_limited_routing_reaches_at_most_topk_group_nodes():
    """DeepSeek-V3 on 8 nodes x 8 GPUs, one expert group per node, top-4 groups: a token reaches
    the nodes of its 4 kept groups that supply at least one of its 8 experts, so node hits sum to
    4 * (1 - P(a kept group supplies none)) (closed form, hierarchical kernel)."""
    q = routing.inclusion_probs("uniform", 256, 8)
    place = placement.contiguous(256, 64)
    node = traffic.node_of_device(64, 8)
    hits = traffic.hit_probability(node[place.slot_device], 8, place, q, 8, 8, 4)
    none = routing.kept_group_counts(32, 8, 4, 8)[0]
    assert 0 < none < 0.02
    assert hits.sum() == pytest.approx(4.0 * (1.0 - none))


# DeepEP README, "Low-latency kernels with pure RDMA": H800 + CX7 400 Gb/s, 128 tokens,
# hidden 7168, top-8, FP8 dispatch and BF16 combine. (EP, dispatch us, combine us)
#: The EP 8 row (77 / 114 us) is a known miss: EP 8 fits one NVLink node, so moesim prices the
#: exchange at NVLink bandwidth and predicts 50.9 / 93.1 us; what the published time holds
#: beyond the bytes (the low-latency kernels' per-call fixed cost: launch, per-expert
#: send/receive signalling and flag polling, the FP8 cast) is not in moesim's latency terms.
DEEPEP_LOW_LATENCY = [
    pytest.param(8, 77, 114, marks=pytest.mark.xfail(strict=True, reason=(
        "known miss: EP 8 is one NVLink node; the published 77/114 us are dominated by the "
        "low-latency kernels' fixed per-call cost, which moesim does not model (50.9/93.1 us)"))),
    (16, 118, 195), (32, 155, 273), (64, 173, 314), (128, 192, 369), (256, 194, 360)]


@pytest.mark.parametrize("ep,dispatch_us,combine_us", DEEPEP_LOW_LATENCY)
def test_deepep_low_latency_published_latency(ep, dispatch_us, combine_us):
    """Per-(token, expert) copies over 50 GB/s NICs at the profile's 0.85 efficiency match
    DeepEP's published low-latency dispatch/combine times within 20 %. The 0.85 is sourced
    apart from this table (NCCL maintainers' per-NIC figures, see h100-sxm.yaml)."""
    r = moesim.predict("deepseek-v3", "h800-sxm", tokens=128, ep=ep, a2a_kernel="per-expert")
    assert r.breakdown_s["dispatch"] * 1e6 == pytest.approx(dispatch_us, rel=0.2)
    assert r.breakdown_s["combine"] * 1e6 == pytest.approx(combine_us, rel=0.2)
    assert r.breakdown_s["combine"] > r.breakdown_s["dispatch"]  # bf16 back, fp8 out
