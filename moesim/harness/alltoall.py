"""All-to-all microbenchmark over ``torch.distributed`` (NCCL on GPUs, gloo on CPUs).

Run under torchrun, on one node or many (one process per device)::

    torchrun --nproc_per_node=4 -m moesim.harness.alltoall --out a2a.json [--quick]

or from Python with ``launch_local`` (one node, a free port). Each case sends rows of ``hidden``
elements of ``dtype`` (bytes per row from ``moesim.core.traffic.token_bytes``, the predictor's
own accounting) with ``all_to_all_single``: ``even`` splits (the same rows to every rank) or
``uneven`` ones (seeded Zipf weights over destinations, different on every rank). A sample is
one call between a barrier and the end of the call (device synchronised); a case's sample is
the slowest rank's. A case whose spread is wide is measured again (as ``timing.bench`` does);
all ranks see the same gathered samples, so they agree on it without further messages.
Rank 0 writes the records with, per rank, the bytes sent to and received
from other ranks on the same node (``*_intra``) and on other nodes (``*_inter``); a rank's own
rows are a local copy and are not counted, as in the cost model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from moesim.core.traffic import token_bytes
from moesim.harness import launch
from moesim.harness.launch import HarnessError  # noqa: F401  (raised by launch_local)
from moesim.harness.records import FORMAT, Measurements, Record, load_measurements
from moesim.harness.stats import Stats
from moesim.harness.timing import BenchConfig

PATTERNS = ("even", "uneven")


def split_rows(pattern: str, world: int, total_bytes: float, row_bytes: float,
               seed: int = 0) -> np.ndarray:
    """``rows [world, world]``: rows rank s sends to rank d, about ``total_bytes`` off-rank
    per rank (at least one row to every peer)."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    peers = max(world - 1, 1)
    per_peer = max(1.0, total_bytes / row_bytes / peers)
    if pattern == "even":
        weights = np.ones((world, world))
    else:
        rng = np.random.default_rng(seed)
        zipf = 1.0 / np.arange(1, world + 1) ** 1.0
        weights = np.stack([rng.permutation(zipf) for _ in range(world)]) * world / zipf.sum()
    return np.maximum(np.rint(weights * per_peer), 1).astype(np.int64)


def traffic_bytes(rows: np.ndarray, row_bytes: float, node_of: np.ndarray) -> dict[str, list]:
    """Per-rank bytes sent/received off-rank, split by same node (intra) / other node (inter)."""
    b = rows * row_bytes
    np.fill_diagonal(b, 0.0)
    same = node_of[:, None] == node_of[None, :]
    return {"send_intra": (b * same).sum(1).tolist(), "recv_intra": (b * same).sum(0).tolist(),
            "send_inter": (b * ~same).sum(1).tolist(), "recv_inter": (b * ~same).sum(0).tolist()}


def repeats_for(total_bytes: float, config: BenchConfig, guess_bytes_per_s: float = 1e9,
                guess_latency_s: float = 3e-4) -> BenchConfig:
    """A fixed repeat count (the same on every rank) sized from a rough time guess."""
    per_call = guess_latency_s + total_bytes / guess_bytes_per_s
    n = int(min(config.repeats, max(config.min_repeats, config.budget_s // per_call)))
    return BenchConfig(warmup=config.warmup, repeats=n, min_repeats=n, budget_s=config.budget_s)


def worker_cases(sizes, uneven_sizes) -> list[tuple[str, int]]:
    return [("even", s) for s in sizes] + [("uneven", s) for s in uneven_sizes]


def _run_case(dist, torch, ctx: dict, pattern: str, size: int, args) -> Record:
    from moesim.harness.timing import WallTimer, device_sync, sample

    world, rank, device = ctx["world"], ctx["rank"], ctx["device"]
    row_bytes = float(token_bytes(args.hidden, args.dtype))
    rows = split_rows(pattern, world, size, row_bytes, seed=args.seed + size)
    in_splits, out_splits = rows[rank].tolist(), rows[:, rank].tolist()
    td = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    gen = torch.Generator().manual_seed(args.seed + rank)
    sets = [torch.randn(sum(in_splits), args.hidden, generator=gen).to(device, td)
            for _ in range(args.sets)]
    out = torch.empty(sum(out_splits), args.hidden, dtype=td, device=device)
    config = repeats_for(max(sum(in_splits), sum(out_splits)) * row_bytes, ctx["config"])
    timer = WallTimer(sync=device_sync(device), before=dist.barrier)
    call = lambda x: dist.all_to_all_single(out, x, out_splits, in_splits)
    stats = _slowest_rank_stats(dist, torch, ctx, lambda: sample(call, sets, config, timer))
    params = {"pattern": pattern, "world_size": world, "nodes": int(ctx["node_of"].max()) + 1,
              "target_bytes": size, "hidden": args.hidden, "dtype": args.dtype,
              "row_bytes": row_bytes, "rows": rows.tolist(), "backend": ctx["backend"],
              **traffic_bytes(rows, row_bytes, ctx["node_of"])}
    return Record("alltoall", params, stats)


def _slowest_rank_stats(dist, torch, ctx: dict, take_samples) -> Stats:
    """Stats of the per-call maximum over ranks, measured again while the spread is wide."""
    world, device, cfg = ctx["world"], ctx["device"], ctx["config"]
    best = None
    for attempt in range(1, cfg.retries + 2):
        mine = torch.tensor(take_samples(), dtype=torch.float64)
        gathered = [torch.empty_like(mine) for _ in range(world)]
        if device.type == "cpu":
            dist.all_gather(gathered, mine)
        else:
            _gather_cuda(dist, torch, mine, gathered, device)
        stats = Stats.from_samples(torch.stack(gathered).max(0).values.numpy())
        if best is None or stats.median_s < best.median_s:
            best = stats
        # every rank holds the same gathered samples, so every rank takes the same decision
        if stats.rel_iqr <= cfg.max_rel_iqr:
            break
    return replace(best, attempts=attempt)


def _gather_cuda(dist, torch, mine, gathered, device):
    parts = [torch.empty_like(mine, device=device) for _ in gathered]
    dist.all_gather(parts, mine.to(device))
    for dst, src in zip(gathered, parts):
        dst.copy_(src.cpu())


def _setup(torch, dist):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rank = launch.init_rank(device, always_group=True)
    nodes = launch.gather(rank, rank.node)
    return {"device": rank.device, "backend": rank.backend, "world": rank.world,
            "rank": rank.rank, "node_of": np.array(nodes), "context": rank,
            "local_world": int(os.environ.get("LOCAL_WORLD_SIZE", str(rank.world)))}


def worker_main(argv: list[str] | None = None) -> int:
    import torch
    import torch.distributed as dist

    from moesim.harness.device import device_facts
    from moesim.harness.timing import FULL, QUICK

    args = _parser().parse_args(argv)
    ctx = _setup(torch, dist)
    ctx["config"] = QUICK if args.quick else FULL
    try:
        records = [_run_case(dist, torch, ctx, p, s, args).to_dict()
                   for p, s in worker_cases(args.sizes, args.uneven_sizes)]
        if ctx["rank"] == 0:
            facts = device_facts(ctx["device"])
            facts.update({"world_size": ctx["world"], "local_world_size": ctx["local_world"],
                          "backend": ctx["backend"], "torch_threads": torch.get_num_threads()})
            doc = {"format": FORMAT, "provenance": {"alltoall": facts,
                                                    "command": " ".join(sys.argv)},
                   "records": records}
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    finally:
        launch.close_rank(ctx["context"])
    return 0


def _sizes(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m moesim.harness.alltoall",
                                description="all-to-all microbenchmark (run under torchrun)")
    p.add_argument("--out", required=True, help="JSON file rank 0 writes")
    p.add_argument("--sizes", type=_sizes, default=[1024 * 4 ** i for i in range(8)],
                   help="comma-separated off-rank bytes per rank, even splits")
    p.add_argument("--uneven-sizes", type=_sizes, default=[64 * 1024, 1 << 20, 16 << 20])
    p.add_argument("--hidden", type=int, default=256, help="elements per row")
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--sets", type=int, default=3, help="input buffers rotated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    return p


def launch_local(nproc: int, out: str | Path, *, sizes, uneven_sizes=(), hidden: int = 256,
                 dtype: str = "bf16", quick: bool = True, timeout_s: float = 300,
                 threads_per_rank: int = 1) -> Measurements:
    """Run the benchmark with ``nproc`` ranks on this machine (torchrun, a free port)."""
    args = ["--out", str(out), "--sizes", ",".join(map(str, sizes)),
            "--uneven-sizes", ",".join(map(str, uneven_sizes)), "--hidden", str(hidden),
            "--dtype", dtype] + (["--quick"] if quick else [])
    launch.run_ranks(nproc, "moesim.harness.alltoall", args, threads=threads_per_rank,
                     timeout_s=timeout_s, torchrun_for_one=True)
    return load_measurements(out)


if __name__ == "__main__":
    sys.exit(worker_main())
