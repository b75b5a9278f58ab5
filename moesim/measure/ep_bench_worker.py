"""Timed MoE forward passes for ``moesim measure``: one process per rank, one line per config.

    python -m torch.distributed.run --standalone --nproc_per_node=EP \
        -m moesim.measure.ep_bench_worker --cases cases.json --out partial.jsonl

Without torchrun it runs as one rank (``ep == 1`` configs). Each case (built by
``moesim.measure.runner.build_case``) carries the cost model's own routing and placement:
``q [num_experts]`` (``moesim.core.routing.inclusion_probs``) and ``placement [num_ranks][...]``
(``moesim.core.placement.build_placement(...).as_lists()``), so the measured layer is the
predicted one. Expert ids are forced with :func:`sample_inclusion_ids`, whose per-token
inclusion probabilities are exactly ``q``.

Per case: ``warmup`` untimed forwards, then ``repeats`` timed ones, each after a barrier, with
Python's garbage collector off (as ``timeit`` does). Every rank rotates through copies of its
layer whose weights together exceed ``cache_bytes`` (twice the last-level cache, split over the
ranks), so each forward reads its weights from DRAM as a layer of a real model does (the other
layers evict it) and as the cost model and the calibration's rotated inputs assume, while the
tokens stay cache-hot. Each rank times its forward and each phase; rank 0 combines the ranks
(:func:`combine_ranks`: the layer time runs from the last rank's first phase to the last
rank's last phase) and appends one JSON line per case, flushed and fsynced, so an interrupted
run keeps every finished case. ``ep == 1`` runs ``MoELayer`` (no exchange at all). Ranks are
bound to cores where each gets its own (:func:`pin_to_core`) and freed memory is reused
(:func:`reuse_freed_memory`).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import time
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from moesim.config import MoEModel
from moesim.measure.ep import EPMoELayer, two_batch_stack
from moesim.measure.layers import MoELayer, layer_copies
from moesim.measure.timers import NULL_TIMER, PHASES, WallTimer
from moesim.measure.weights import torch_dtype

COMM_PHASES = ("dispatch", "combine")


def sample_inclusion_ids(q: np.ndarray, num_tokens: int, top_k: int, seed: int) -> np.ndarray:
    """``topk_idx [num_tokens, num_topk]``: distinct experts with ``P(e chosen) == q[e]``.

    ``q [num_experts]``: inclusion probabilities, ``sum(q) == top_k``, ``0 <= q <= 1`` (the cost
    model's). Systematic (Madow) sampling over a fresh random order of the experts per token:
    the experts' ``q`` tile ``[0, top_k)``; one uniform ``u`` picks the experts covering
    ``u, u+1, ..., u+top_k-1``. Each interval is at most 1 long, so the k picks are distinct,
    and expert e is picked with probability exactly ``q[e]``. (Gumbel-top-k on ``q``, as in
    ``sample_topk_ids``, gives flatter inclusion than ``q`` for skewed ``q`` and ``top_k > 1``.)
    Tokens are independent, so per-expert counts are Binomial(num_tokens, q_e).
    """
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 1 or np.any(q < 0) or np.any(q > 1 + 1e-9) or abs(q.sum() - top_k) > 1e-6:
        raise ValueError(f"q must be 1-D with 0 <= q <= 1 and sum(q) == top_k ({top_k}), "
                         f"got sum {q.sum():.6g}")
    q = np.minimum(q, 1.0) * (top_k / q.sum())
    rng = np.random.default_rng(seed)
    out = np.empty((num_tokens, top_k), dtype=np.int64)
    chunk = max(1, (1 << 22) // max(1, q.size * top_k))
    for start in range(0, num_tokens, chunk):
        n = min(chunk, num_tokens - start)
        order = rng.permuted(np.tile(np.arange(q.size), (n, 1)), axis=1)
        cum = np.cumsum(q[order], axis=1)
        points = rng.random((n, 1)) + np.arange(top_k)
        pos = np.minimum((cum[:, None, :] <= points[:, :, None]).sum(axis=2), q.size - 1)
        out[start:start + n] = np.take_along_axis(order, pos, axis=1)
    if top_k > 1 and np.any(np.diff(np.sort(out, axis=1), axis=1) == 0):
        raise ArithmeticError("systematic sampling picked an expert twice (q above 1?)")
    return out


def _layer(case: dict, rank: int, num_ranks: int):
    model = MoEModel(**case["model"])
    kw = {"dtype": torch_dtype(case["dtype"]), "seed": int(case.get("weight_seed", 0))}
    overlap = case.get("overlap", "none")
    if overlap == "two-batch":  # a stack of EP layers (identity exchanges on one rank)
        return EPMoELayer(model, case["placement"], rank=rank, **kw)
    if num_ranks == 1:  # no exchange: nothing for the shared experts to hide under
        return MoELayer(model, **kw)
    return EPMoELayer(model, case["placement"], rank=rank, overlap=overlap, **kw)


#: Consecutive layers one timed forward runs under two-batch overlap: the pipeline of the two
#: micro-batches continues across them, and the times are reported per layer.
TWO_BATCH_LAYERS = 4


def stack_depth(case: dict) -> int:
    return TWO_BATCH_LAYERS if case.get("overlap") == "two-batch" else 1


def _inputs(case: dict, rank: int, num_ranks: int, dtype: torch.dtype):
    """This rank's tokens ``x [tokens, hidden]`` and forced ``topk_idx [tokens, top_k]``."""
    model, tokens, seed = case["model"], int(case["tokens"]), int(case["seed"])
    ids = sample_inclusion_ids(np.asarray(case["q"]), num_ranks * tokens, model["top_k"],
                               seed=seed + 7919)
    gen = torch.Generator().manual_seed(seed * 1009 + rank)
    x = torch.randn(tokens, model["hidden"], generator=gen).to(dtype)
    return x, torch.from_numpy(ids[rank * tokens:(rank + 1) * tokens].copy())


def _slot_counts(layer) -> list[int]:
    """Pairs per local slot in placement order (the cost model's slot order on this rank)."""
    if isinstance(layer, EPMoELayer):
        return [int(c) for c in layer.last_stats.tokens_per_local_expert]
    return [int(c) for c in layer.last_tokens_per_expert.tolist()]


def machine_busy_s() -> float:
    """CPU seconds every process on this machine has used so far (``/proc/stat``; NaN where
    there is none): busy = user + nice + system + irq + softirq + steal."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """Wall seconds, this process's CPU seconds and the machine's busy CPU seconds over a
    window: what other processes took meanwhile is ``busy - sum of every rank's own``."""

    def __enter__(self):
        self.wall, self.own, self.busy = time.perf_counter(), time.process_time(), machine_busy_s()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.own = time.process_time() - self.own
        self.busy = machine_busy_s() - self.busy
        return False

    def as_dict(self) -> dict:
        return {"wall_s": self.wall, "own_cpu_s": self.own, "busy_cpu_s": self.busy}


def time_case(case: dict, rank: int, num_ranks: int, barrier=None) -> dict:
    """This rank's samples: ``total_s [repeats]``, ``phases_s {phase: [repeats]}``."""
    layers = layer_copies(_layer(case, rank, num_ranks), int(case.get("cache_bytes", 0)))
    while len(layers) < stack_depth(case):
        layers.append(copy.deepcopy(layers[0]))
    x, ids = _inputs(case, rank, num_ranks, layers[0].dtype)
    barrier = barrier or (lambda: None)
    gc.collect()
    barrier()
    gc.disable()  # as timeit does: a collection on one rank would stall every rank
    try:
        with CpuWindow() as window:
            samples, layer = _timed_forwards(layers, x, ids, case, barrier)
    finally:
        gc.enable()
    return {"rank": rank, **samples, "slot_counts": _slot_counts(layer),
            "threads": torch.get_num_threads(), "layer_copies": len(layers),
            "window": window.as_dict()}


class SpanTimer(WallTimer):
    """``WallTimer`` that also keeps when the first phase began and the last one ended, and when
    each exchange phase (dispatch, combine) was entered and left (``time.perf_counter``:
    CLOCK_MONOTONIC, one clock for every process of this host)."""

    def __init__(self):
        super().__init__()
        self.first: float | None = None
        self.last: float | None = None
        self.marks: dict[str, tuple[float, float]] = {}

    @contextmanager
    def phase(self, name: str):
        if self.first is None:
            self.first = time.perf_counter()
        start = time.perf_counter()
        with super().phase(name):
            yield
        self.last = time.perf_counter()
        if name in COMM_PHASES:
            self.marks[name] = (self.marks.get(name, (start,))[0], self.last)


def _timed_forwards(layers, x, ids, case, barrier):
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
        timer = SpanTimer()
        barrier()
        start = time.perf_counter()
        layer = run(warmup + i, timer)
        walls.append(time.perf_counter() - start)
        spans.append((timer.first, timer.last))
        for p in PHASES:
            phases[p].append(timer.seconds.get(p, 0.0))
        unmarked = (float("nan"), float("nan"))
        for p in COMM_PHASES:  # a stack enters each exchange many times: no single span
            marks[p].append(timer.marks.get(p, unmarked) if depth == 1 else unmarked)
    return {"total_s": walls, "span_s": spans, "phases_s": phases, "marks_s": marks}, layer


def combine_ranks(case: dict, per_rank: list[dict]) -> dict:
    """One record from every rank's samples. Per repeat:

    - ``total_s``, the layer time: from the moment the last rank began its first phase to the
      moment the last rank ended its last one (one monotonic clock on this host). Starting at
      the last rank removes the barrier's exit skew; timing phases only leaves out the
      harness's own work in the forward (validating the forced ids, EP byte statistics:
      30-260 us here);
    - ``wall_s``: the slowest rank's whole forward, from its own barrier exit;
    - ``phases_s``: compute phases of the critical rank (most compute: the one the others wait
      for); dispatch and combine from the moment the last rank entered the exchange to the
      moment the last rank left it: the exchange on the critical path, including waking the
      ranks that slept in it, not the wait for stragglers (records without entry/exit marks:
      the shortest over ranks).
    """
    depth = stack_depth(case)  # layers per timed forward: every time below is per layer
    walls = np.array([r["total_s"] for r in per_rank]) / depth                # [ranks, repeats]
    spans = np.array([r["span_s"] for r in per_rank], dtype=float)            # [ranks, repeats, 2]
    totals = (spans[:, :, 1].max(axis=0) - spans[:, :, 0].max(axis=0)) / depth
    phases = {p: np.array([r["phases_s"][p] for r in per_rank]) / depth for p in PHASES}
    compute = sum(phases[p] for p in PHASES if p not in COMM_PHASES)
    critical = compute.argmax(axis=0)                                          # [repeats]
    cols = np.arange(walls.shape[1])
    pick = {p: phases[p].min(axis=0) if p in COMM_PHASES else phases[p][critical, cols]
            for p in PHASES}
    for p in COMM_PHASES:
        if all(r.get("marks_s") for r in per_rank):
            m = np.array([r["marks_s"][p] for r in per_rank], dtype=float)  # [ranks, repeats, 2]
            if np.isfinite(m).all():
                pick[p] = m[:, :, 1].max(axis=0) - m[:, :, 0].max(axis=0)
    return {**foreign_cpu(per_rank),
        "key": case["key"], "ep": len(per_rank), "threads_per_rank": per_rank[0]["threads"],
        "repeats": int(case["repeats"]), "warmup": int(case["warmup"]),
        "cache_bytes": int(case.get("cache_bytes", 0)), "layer_copies": per_rank[0]["layer_copies"],
        "layers_per_forward": depth,
        "total_s": totals.tolist(), "wall_s": walls.max(axis=0).tolist(),
        "phases_s": {p: v.tolist() for p, v in pick.items()},
        "critical_rank": critical.tolist(),
        "rank_median_s": np.median(compute, axis=1).tolist(),
        "slot_counts": [c for r in per_rank for c in r["slot_counts"]],
    }


def foreign_cpu(per_rank: list[dict]) -> dict:
    """CPU seconds other processes used during the timed window (rank 0's window, every rank's
    own CPU subtracted) and their share of the machine (``usable cores x wall``): > ~0.1 means
    the timings shared the CPU with someone else. ``/proc/stat`` counts 10 ms ticks, so
    windows shorter than ~0.2 s read only coarsely."""
    window = per_rank[0].get("window")
    if not window:
        return {}
    own = sum(r["window"]["own_cpu_s"] for r in per_rank)
    foreign = max(0.0, window["busy_cpu_s"] - own)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"window_s": window["wall_s"], "own_cpu_s": own, "foreign_cpu_s": foreign,
            "foreign_cpu_frac": foreign / max(1e-9, cores * window["wall_s"])}


def append_line(path: str, record: dict) -> None:
    """Append one JSON line and force it to disk (a crash right after keeps the case)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_cases(cases: list[dict], rank: int = 0, num_ranks: int = 1, sink=None) -> None:
    """Time every case; rank 0 hands each finished record to ``sink(record)``."""
    barrier = dist.barrier if num_ranks > 1 else None
    for case in cases:
        started, load = time.time(), _load()
        mine = time_case(case, rank, num_ranks, barrier)
        per_rank = [mine]
        if num_ranks > 1:
            per_rank = [None] * num_ranks
            dist.all_gather_object(per_rank, mine)
        if rank == 0 and sink is not None:
            record = combine_ranks(case, per_rank)
            record.update({"load_1m_start": load, "load_1m_end": _load(),
                           "case_s": time.time() - started, "torch": torch.__version__})
            sink(record)


#: Share microbenchmarks: what one rank gets of the machine while every rank runs the same.
SHARE_CASES = {"gemm_flops_per_s": ("gemm", 512), "copy_bytes_per_s": ("copy", 32 << 20),
               "ops_per_s": ("op", 64)}


def _share_call(kind: str, size: int):
    """(call, work per call): a [size, size] x [size, size] fp32 GEMM (FLOP), a copy of
    ``size`` bytes (bytes read + written) or an add of ``size`` elements (one op)."""
    if kind == "gemm":
        a, b, out = torch.randn(size, size), torch.randn(size, size), torch.empty(size, size)
        return (lambda: torch.mm(a, b, out=out)), 2.0 * size ** 3
    if kind == "copy":
        src, dst = torch.randn(size // 4), torch.empty(size // 4)
        return (lambda: dst.copy_(src)), 2.0 * size
    x, y = torch.randn(size), torch.empty(size)
    return (lambda: torch.add(x, 1.0, out=y)), 1.0


def share_rates(duration_s: float, barrier=None) -> dict[str, dict]:
    """Per share case on this rank: ``rate`` (work per second) and the CPU ``window``, every
    rank looping ``duration_s`` after a barrier (many scheduler time slices: a long-run share)."""
    out = {}
    for name, (kind, size) in SHARE_CASES.items():
        call, work = _share_call(kind, size)
        call()
        if barrier:
            barrier()
        calls = 0
        with CpuWindow() as window:
            start = time.perf_counter()
            while time.perf_counter() - start < duration_s:
                call()
                calls += 1
        out[name] = {"rate": calls * work / window.wall, "window": window.as_dict()}
    return out


#: The sync case: GEMMs of ``SYNC_GEMM``^3 (about 0.3 ms of compute on one core of this
#: machine, the scale of a small layer's phases) then one all-to-all of ``SYNC_ROWS`` fp32 rows of
#: 256 per peer, ``SYNC_ITERS`` times.
SYNC_GEMM, SYNC_ROWS, SYNC_ITERS = 256, 16, 100


def sync_seconds(num_ranks: int, barrier, iters: int = SYNC_ITERS) -> dict:
    """What one blocking all-to-all costs between compute phases, as a layer runs it: this
    rank's wall seconds for ``iters`` x (GEMM; all-to-all) and for ``iters`` x GEMM alone. A
    rank that waits in a collective sleeps; waking it when the data arrives (on this KVM guest,
    an IPI to a halted vCPU) and getting its core back (when ranks share cores) is paid on every
    exchange, and back-to-back all-to-alls (the calibration's size sweep) never pay it. Also
    ``overlap_s``: ``iters`` x (all-to-all issued async; GEMM; wait), how much of the exchange
    the GEMM can hide."""
    size = SYNC_GEMM
    a, b, out = torch.randn(size, size), torch.randn(size, size), torch.empty(size, size)
    send = torch.randn(num_ranks * SYNC_ROWS * 256)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send)
    torch.mm(a, b, out=out)

    def gemm():
        torch.mm(a, b, out=out)

    def gemm_then_exchange():
        gemm()
        dist.all_to_all_single(recv, send)

    def exchange_under_gemm():
        work = dist.all_to_all_single(recv, send, async_op=True)
        gemm()
        work.wait()

    steps = {"compute_s": gemm, "compute_a2a_s": gemm_then_exchange,
             "overlap_s": exchange_under_gemm, "compute_s2": gemm}
    walls = {}
    for name, step in steps.items():
        barrier()
        start = time.perf_counter()
        for _ in range(iters):
            step()
        walls[name] = time.perf_counter() - start
    return {"iters": iters, "bytes_per_peer": SYNC_ROWS * 256 * 4,
            "compute_s": min(walls["compute_s"], walls["compute_s2"]),
            "compute_a2a_s": walls["compute_a2a_s"], "overlap_s": walls["overlap_s"]}


def run_share(duration_s: float, rank: int, num_ranks: int, sink) -> None:
    barrier = dist.barrier if num_ranks > 1 else None
    mine = share_rates(duration_s, barrier)
    if num_ranks > 1:
        mine["sync"] = sync_seconds(num_ranks, barrier)
    per_rank = [mine]
    if num_ranks > 1:
        per_rank = [None] * num_ranks
        dist.all_gather_object(per_rank, mine)
    if rank == 0:
        sink({"share": True, "ranks": num_ranks, "threads_per_rank": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "duration_s": duration_s, "load_1m": _load(), "torch": torch.__version__,
              "rates": {k: [r[k]["rate"] for r in per_rank] for k in SHARE_CASES},
              **({"sync": [r["sync"] for r in per_rank]} if num_ranks > 1 else {}),
              "foreign_cpu_frac": {k: foreign_cpu([r[k] for r in per_rank])["foreign_cpu_frac"]
                                   for k in SHARE_CASES}})


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def reuse_freed_memory() -> str:
    """Make glibc malloc keep freed memory for reuse, as PyTorch's CUDA caching allocator (and
    jemalloc/tcmalloc, the usual choice for CPU inference) do: no ``mmap`` for big blocks and
    no trimming of the heap. With the defaults every tensor above 32 MiB (glibc's largest
    ``mmap`` threshold) is mapped fresh and its pages are faulted in and zeroed on first touch:
    about 0.5 ms per MiB on this KVM guest, a cost of the OS, not of the MoE layer. Returns
    what was set (recorded with every measurement)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return "system (no glibc mallopt)"
    m_trim_threshold, m_mmap_max = -1, -4
    if libc.mallopt(m_mmap_max, 0) != 1 or libc.mallopt(m_trim_threshold, 1 << 30) != 1:
        return "system (mallopt refused)"
    return "glibc: M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB (freed memory reused)"


def pin_to_core(rank: int, num_ranks: int) -> list[int] | None:
    """Bind this process to core ``rank`` (``mpirun --bind-to core``) when every rank can have
    its own core: a rank woken by gloo otherwise may land on a busy core and wait for a time
    slice (bare 8 KiB all-to-alls after 0.3 ms of compute, 2 ranks: 43 of 200 calls > 1 ms
    unpinned, 8 pinned). With more ranks than cores the scheduler is left to balance them
    (pinned pairs got 0.29-0.44 of a core each instead of ~0.5). Returns the cores or None."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if num_ranks > len(cores):
        return None
    os.sched_setaffinity(0, {cores[rank]})
    return sorted(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", help="JSON file: a list of cases")
    parser.add_argument("--share-s", type=float, dest="share_s",
                        help="instead of cases: measure each rank's share of the machine, "
                             "looping each share case this many seconds")
    parser.add_argument("--out", required=True, help="JSON-lines file rank 0 appends to")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--timeout-s", type=float, default=600, help="collective timeout")
    parser.add_argument("--no-pin", action="store_true", dest="no_pin",
                        help="let the OS place ranks (default: rank r on core r when ranks <= "
                             "cores)")
    parser.add_argument("--system-malloc", action="store_true", dest="system_malloc",
                        help="keep glibc's defaults (fresh pages for tensors > 32 MiB)")
    args = parser.parse_args(argv)
    if (args.cases is None) == (args.share_s is None):
        parser.error("give exactly one of --cases and --share-s")
    torch.set_num_threads(args.threads)
    allocator = "system (default glibc)" if args.system_malloc else reuse_freed_memory()
    distributed = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo", timeout=timedelta(seconds=args.timeout_s))
    rank, num_ranks = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if num_ranks > 1 and not args.no_pin:
        pin_to_core(rank, num_ranks)
    sink = lambda rec: append_line(args.out, {**rec, "allocator": allocator})
    try:
        if args.share_s is not None:
            run_share(args.share_s, rank, num_ranks, sink)
        else:
            with open(args.cases, encoding="utf-8") as f:
                run_cases(json.load(f), rank, num_ranks, sink=sink)
    finally:
        if distributed:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
