"""Timed MoE forward passes for ``moesim measure``: one process per rank, one record per config.

    python -m torch.distributed.run --standalone --nproc_per_node=EP \
        -m moesim.measure.ep_bench_worker --cases cases.json --journal measure.sqlite \
        --device cpu|cuda

(launched by ``moesim.harness.launch.run_ranks``; without torchrun it runs as one rank, the
``ep == 1`` configs). Each case (``moesim.measure.cases.build_case``) carries the cost model's
own routing and placement: ``q [num_experts]`` (``moesim.core.routing.inclusion_probs``) and
``placement [num_ranks][...]`` (``moesim.core.placement.build_placement(...).as_lists()``), so
the measured layer is the predicted one; expert ids are forced with
``moesim.measure.forced.sample_inclusion_ids`` (inclusion probabilities exactly ``q``).

The device is the run's (``--device``): weights, inputs and forced ids live on ``cuda:LOCAL_RANK``
or the CPU, ranks talk over NCCL or gloo, and the phase timer synchronises the GPU around each
phase (``moesim.harness.device.plan_for`` decides all three from the device).

Per case: ``warmup`` untimed forwards, then ``repeats`` timed ones, each after a barrier, with
Python's garbage collector off (as ``timeit`` does). Every rank rotates through copies of its
layer whose weights together exceed ``cache_bytes`` (twice the last-level cache, split over the
ranks), so each forward reads its weights from memory as a layer of a real model does, while
the tokens stay cache-hot. Rank 0 combines the ranks (``moesim.measure.combine.combine_ranks``)
and commits one record per case to the journal (``moesim.measure.journal``), so an interrupted
run keeps every finished case. ``ep == 1`` runs ``MoELayer`` (no exchange at all).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time

import numpy as np
import torch

from moesim.config import MoEModel
from moesim.core.layer import PHASES
from moesim.harness import launch
from moesim.harness.device import plan_for
from moesim.harness.host import CpuWindow, load_1m
from moesim.harness.timing import NULL_TIMER, PhaseTimer
from moesim.measure.combine import COMM_PHASES, combine_ranks, stack_depth
from moesim.measure.ep import EPMoELayer, two_batch_stack
from moesim.measure.forced import sample_inclusion_ids
from moesim.measure.layers import MoELayer, layer_copies
from moesim.measure.weights import torch_dtype


def _layer(case: dict, rank: int, num_ranks: int, device):
    model = MoEModel(**case["model"])
    kw = {"dtype": torch_dtype(case["dtype"]), "seed": int(case.get("weight_seed", 0)),
          "device": device}
    overlap = case.get("overlap", "none")
    if overlap == "two-batch":  # a stack of EP layers (identity exchanges on one rank)
        return EPMoELayer(model, case["placement"], rank=rank, **kw)
    if num_ranks == 1:  # no exchange: nothing for the shared experts to hide under
        return MoELayer(model, **kw)
    return EPMoELayer(model, case["placement"], rank=rank, overlap=overlap, **kw)


def _inputs(case: dict, rank: int, num_ranks: int, dtype: torch.dtype, device):
    """This rank's tokens ``x [tokens, hidden]`` on ``device`` and forced ``topk_idx
    [tokens, top_k]`` (the slice of one global draw)."""
    model, tokens, seed = case["model"], int(case["tokens"]), int(case["seed"])
    ids = sample_inclusion_ids(np.asarray(case["q"]), num_ranks * tokens, model["top_k"],
                               seed=seed + 7919)
    gen = torch.Generator().manual_seed(seed * 1009 + rank)
    x = torch.randn(tokens, model["hidden"], generator=gen).to(device=device, dtype=dtype)
    return x, torch.from_numpy(ids[rank * tokens:(rank + 1) * tokens].copy())


def _slot_counts(layer) -> list[int]:
    """Pairs per local slot in placement order (the cost model's slot order on this rank)."""
    if isinstance(layer, EPMoELayer):
        return [int(c) for c in layer.last_stats.tokens_per_local_expert]
    return [int(c) for c in layer.last_tokens_per_expert.tolist()]


def time_case(case: dict, rank: int, num_ranks: int, barrier=None, device="cpu") -> dict:
    """This rank's samples: ``total_s [repeats]``, ``phases_s {phase: [repeats]}``, spans."""
    device = torch.device(device)
    layers = layer_copies(_layer(case, rank, num_ranks, device), int(case.get("cache_bytes", 0)))
    while len(layers) < stack_depth(case):
        layers.append(copy.deepcopy(layers[0]))
    x, ids = _inputs(case, rank, num_ranks, layers[0].dtype, device)
    barrier = barrier or (lambda: None)
    gc.collect()
    barrier()
    gc.disable()  # as timeit does: a collection on one rank would stall every rank
    try:
        with CpuWindow() as window:
            samples, layer = _timed_forwards(layers, x, ids, case, barrier, device)
    finally:
        gc.enable()
    return {"rank": rank, **samples, "slot_counts": _slot_counts(layer),
            "threads": torch.get_num_threads(), "layer_copies": len(layers),
            "window": window.as_dict()}


def _timed_forwards(layers, x, ids, case, barrier, device):
    """Per repeat: the forward's wall seconds, its first/last phase times, and each phase."""
    warmup, depth = int(case["warmup"]), stack_depth(case)

    def run(i: int, timer=NULL_TIMER):
        if depth == 1:
            layers[i % len(layers)](x, timer, topk_idx=ids)
            return layers[i % len(layers)]
        stack = [layers[(i * depth + j) % len(layers)] for j in range(depth)]
        two_batch_stack(stack, x, timer, ids)
        return stack[-1]

    for i in range(warmup):
        run(i)
    walls, spans, phases = [], [], {p: [] for p in PHASES}
    marks = {p: [] for p in COMM_PHASES}
    for i in range(int(case["repeats"])):
        timer = PhaseTimer(device)
        barrier()
        timer.sync()
        start = time.perf_counter()
        layer = run(warmup + i, timer)
        timer.sync()
        walls.append(time.perf_counter() - start)
        spans.append((timer.first, timer.last))
        for p in PHASES:
            phases[p].append(timer.seconds.get(p, 0.0))
        unmarked = (float("nan"), float("nan"))
        for p in COMM_PHASES:  # a stack enters each exchange many times: no single span
            marks[p].append(timer.marks.get(p, unmarked) if depth == 1 else unmarked)
    return {"total_s": walls, "span_s": spans, "phases_s": phases, "marks_s": marks}, layer


def run_cases(cases: list[dict], ctx: launch.RankContext | None = None, sink=None) -> None:
    """Time every case on this rank; rank 0 hands each finished record to ``sink(record)``."""
    ctx = ctx or launch.RankContext(0, 1, torch.device("cpu"), None)
    for case in cases:
        started, load = time.time(), load_1m()
        mine = time_case(case, ctx.rank, ctx.world, launch.barrier(ctx), ctx.device)
        per_rank = launch.gather(ctx, mine)
        if ctx.rank == 0 and sink is not None:
            record = combine_ranks(case, per_rank)
            record.update({"load_1m_start": load, "load_1m_end": load_1m(),
                           "case_s": time.time() - started, "torch": torch.__version__,
                           "device": str(ctx.device), "backend": ctx.backend,
                           **case.get("provenance", {})})
            sink(record)


def main(argv: list[str] | None = None) -> int:
    from moesim.measure.journal import Journal

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", required=True, help="JSON file: a list of cases")
    parser.add_argument("--journal", required=True, help="SQLite journal rank 0 commits to")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per rank)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--timeout-s", type=float, default=600, help="collective timeout")
    parser.add_argument("--no-pin", action="store_true", dest="no_pin",
                        help="let the OS place ranks (default: rank r on core r when ranks <= "
                             "cores)")
    parser.add_argument("--system-malloc", action="store_true", dest="system_malloc",
                        help="keep glibc's defaults (fresh pages for tensors > 32 MiB)")
    args = parser.parse_args(argv)
    plan = plan_for(args.device)
    torch.set_num_threads(args.threads)
    allocator = ("system (default glibc)" if args.system_malloc or not plan.host_malloc
                 else launch.reuse_freed_memory())
    ctx = launch.init_rank(args.device, args.timeout_s)
    if ctx.world > 1 and plan.pin_cores and not args.no_pin:
        launch.pin_to_core(ctx.rank, ctx.world)
    journal = Journal(args.journal, import_legacy=False) if ctx.rank == 0 else None
    try:
        with open(args.cases, encoding="utf-8") as f:
            cases = json.load(f)
        run_cases(cases, ctx, sink=lambda rec: journal.add({**rec, "allocator": allocator}))
    finally:
        launch.close_rank(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
