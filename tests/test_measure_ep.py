"""Expert-parallel MoE layer: one rank in-process, 2 and 4 gloo ranks under torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from moesim.config import MoEModel  # noqa: E402
from moesim.config.dtypes import DTYPE_BYTES  # noqa: E402
from moesim.core.traffic import token_bytes  # noqa: E402
from moesim.measure.ep import EPMoELayer  # noqa: E402
from moesim.measure.layers import MoELayer  # noqa: E402
from moesim.config import ConfigError  # noqa: E402
from moesim.core.placement import contiguous, from_device_lists  # noqa: E402
from moesim.measure.placement import ReplicaTable, pairs_off_rank  # noqa: E402

SMALL = dict(hidden=16, expert_ffn=8, experts=8, top_k=2)


def _x(num_tokens: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(num_tokens, 16, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64).to(dtype)


# --- one rank, no process group ------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_single_rank_ep_equals_moe_layer(dtype):
    model = MoEModel(**SMALL, router="sigmoid", num_groups=4, topk_groups=2, shared_experts=1,
                     shared_expert_ffn=8)
    ep = EPMoELayer(model, [list(range(8))[::-1]], dtype=dtype, seed=9)   # slots reordered
    ref = MoELayer(model, dtype=dtype, seed=9)
    x = _x(30, ref.dtype)
    torch.testing.assert_close(ep(x), ref(x))
    stats = ep.last_stats
    assert stats.rows_local == 60 and stats.dispatch_bytes_sent == stats.combine_bytes_recv == 0
    assert stats.tokens_per_local_expert == ref.last_tokens_per_expert.flip(0).tolist()


def test_worker_runs_as_one_rank_without_torchrun(tmp_path, monkeypatch):
    from moesim.measure.ep_worker import main

    monkeypatch.delenv("RANK", raising=False)
    case = {"name": "solo", "model": SMALL, "tokens_per_rank": 8, "routing": "zipf:1.0",
            "iters": 2}
    (tmp_path / "case.json").write_text(json.dumps(case))
    out = tmp_path / "ep.jsonl"
    assert main(["--cases", str(tmp_path / "case.json"), "--out", str(out)]) == 0
    [line] = [json.loads(text) for text in out.read_text().splitlines()]
    [rank] = line["ranks"]
    assert line["num_ranks"] == 1 and rank["ok"] and rank["dispatch_bytes_sent"] == 0
    assert rank["pairs_off_rank"] == 0 and rank["rows_local"] == 16


def test_overlap_is_checked_and_shared_overlap_keeps_the_output():
    model = MoEModel(**SMALL, shared_experts=1, shared_expert_ffn=8)
    with pytest.raises(ValueError, match="overlap"):
        EPMoELayer(model, [list(range(8))], overlap="two-batch")
    ep = EPMoELayer(model, [list(range(8))], dtype="float64", seed=3, overlap="shared")
    ref = MoELayer(model, dtype="float64", seed=3)
    x = _x(12)
    torch.testing.assert_close(ep(x), ref(x))


def test_two_batch_stack_equals_the_layers_in_sequence():
    """Two interleaved micro-batches through 3 layers give what each layer gives the whole
    batch in turn (one rank: identity exchanges)."""
    from moesim.measure.ep import two_batch_stack
    from moesim.harness.timing import PhaseTimer

    model = MoEModel(**SMALL, shared_experts=1, shared_expert_ffn=8)
    layers = [EPMoELayer(model, [list(range(8))], dtype="float64", seed=s) for s in (1, 2, 3)]
    x = _x(13)
    ref = x
    for layer in layers:
        ref = layer(ref)
    timer = PhaseTimer()
    torch.testing.assert_close(two_batch_stack(layers, x, timer), ref)
    assert timer.calls["router"] == 6 and timer.calls["shared_experts"] == 6


def test_placement_is_the_cost_models():
    assert contiguous(8, 4).as_lists() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ConfigError, match="divide"):
        contiguous(8, 3)
    with pytest.raises(ConfigError, match="at least one slot"):
        ReplicaTable([[0, 1], [2, 2]], 4)
    with pytest.raises(ConfigError, match="twice"):
        from_device_lists([[0, 1, 1], [2, 3, 0]], 4)
    with pytest.raises(ConfigError, match=r"\[0, 3\]"):
        ReplicaTable([[0, 1], [2, 4]], 4)
    with pytest.raises(ConfigError, match="same number"):
        ReplicaTable([[0, 1, 2], [3]], 4)
    with pytest.raises(ValueError, match="process group"):
        EPMoELayer(MoEModel(**SMALL), contiguous(8, 2).as_lists(), dtype="float32")
    table = ReplicaTable(contiguous(8, 2), 8)             # a Placement itself is taken as is
    assert table.placement == [[0, 1, 2, 3], [4, 5, 6, 7]] and table.max_local == 4


def test_replicas_round_robin_by_token():
    placement = [[0, 1, 2], [2, 3, 0], [3, 2, 1]]    # expert 2 on ranks 0, 1, 2; 3 on 1, 2
    table = ReplicaTable(placement, 4)
    topk_idx = torch.tensor([[2, 3]] * 6)
    rank, slot = table.destinations(topk_idx, torch.arange(6))
    assert rank[:, 0].tolist() == [0, 1, 2, 0, 1, 2] and rank[:, 1].tolist() == [1, 2] * 3
    assert slot[:, 0].tolist() == [2, 0, 1, 2, 0, 1] and slot[:, 1].tolist() == [1, 0] * 3
    off = [pairs_off_rank(topk_idx.tolist(), range(6), placement, r) for r in range(3)]
    assert off == [sum((rank != r).reshape(-1).tolist()) for r in range(3)]


# --- torchrun, gloo -----------------------------------------------------------------------

CASES_2 = [
    {"name": "softmax", "model": SMALL, "tokens_per_rank": 24, "dtype": "float64"},
    {"name": "replicated-sigmoid-groups-shared", "tokens_per_rank": 24, "dtype": "fp32",
     "model": {**SMALL, "top_k": 3, "router": "sigmoid", "num_groups": 4, "topk_groups": 2,
               "shared_experts": 1, "shared_expert_ffn": 8},
     "placement": [[0, 1, 2, 3, 4], [4, 5, 6, 7, 0]], "routing": "zipf:1.2"},
    {"name": "shared-under-dispatch", "tokens_per_rank": 24, "dtype": "float64",
     "model": {**SMALL, "shared_experts": 2, "shared_expert_ffn": 8}, "overlap": "shared",
     "routing": "uniform", "iters": 2},
    {"name": "two-batch-stack", "tokens_per_rank": 21, "dtype": "float64",
     "model": {**SMALL, "shared_experts": 1, "shared_expert_ffn": 8}, "overlap": "two-batch",
     "routing": "zipf:1.2"},
    {"name": "round-robin-gelu-loop", "tokens_per_rank": 17, "dtype": "float32", "gemm": "loop",
     "model": {**SMALL, "gated": False}, "placement": [[0, 2, 4, 6], [1, 3, 5, 7]],
     "routing": "uniform", "iters": 2},
]
CASES_4 = [
    {"name": "replicated-4", "model": SMALL, "tokens_per_rank": 16, "dtype": "float64",
     "placement": [[0, 1, 2], [2, 3, 4], [4, 5, 6], [6, 7, 0]]},
    {"name": "hot-expert-4", "model": SMALL, "tokens_per_rank": 8, "dtype": "bf16",
     "routing": "zipf:6"},
    {"name": "no-tokens-4", "model": SMALL, "tokens_per_rank": 0, "dtype": "float32"},
]


def _torchrun(tmp_path, num_ranks: int, cases: list[dict]) -> list[dict]:
    cases_file, out = tmp_path / "cases.json", tmp_path / "ep.jsonl"
    cases_file.write_text(json.dumps(cases))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={num_ranks}", "-m", "moesim.measure.ep_worker",
           "--cases", str(cases_file), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


def _check(lines: list[dict], cases: list[dict], num_ranks: int) -> None:
    assert [line["case"] for line in lines] == [c["name"] for c in cases]
    for line, case in zip(lines, cases):
        ranks = line["ranks"]
        assert line["num_ranks"] == len(ranks) == num_ranks
        assert all(r["ok"] for r in ranks), [r["max_abs_err"] for r in ranks]
        if case.get("overlap") == "two-batch":
            continue  # last_stats describe one micro-batch of the last layer
        hidden, dtype = case["model"]["hidden"], case["dtype"]
        for r in ranks:
            # the cost model's bytes per dispatched row, where the dtype is one moesim knows
            row = (token_bytes(hidden, dtype) if dtype in DTYPE_BYTES
                   else hidden * r["element_bytes"])
            assert r["dispatch_bytes_sent"] == r["pairs_off_rank"] * row
            assert r["combine_bytes_recv"] == r["dispatch_bytes_sent"]
            assert r["rows_local"] + r["pairs_off_rank"] == r["tokens"] * case["model"]["top_k"]
        for phase in ("dispatch", "combine"):
            sent = sum(r[f"{phase}_bytes_sent"] for r in ranks)
            assert sent == sum(r[f"{phase}_bytes_recv"] for r in ranks)
        received = sum(sum(r["tokens_per_local_expert"]) for r in ranks)
        assert received == num_ranks * case["tokens_per_rank"] * case["model"]["top_k"]
        if case["tokens_per_rank"]:
            assert {"router", "permute", "dispatch", "experts", "combine",
                    "unpermute"} <= set(ranks[0]["seconds"])


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
@pytest.mark.parametrize("num_ranks, cases", [(2, CASES_2), (4, CASES_4)], ids=["2", "4"])
def test_ep_ranks_match_single_device(tmp_path, num_ranks, cases):
    lines = _torchrun(tmp_path, num_ranks, cases)
    _check(lines, cases, num_ranks)
    assert sum(r["dispatch_rows_sent"] for r in lines[0]["ranks"]) > 0
