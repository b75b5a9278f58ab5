"""What one rank gets of this machine while R ranks share it: the share microbenchmarks.

    python -m torch.distributed.run --standalone --nproc_per_node=R \
        -m moesim.measure.share --share-s 1.0 --out share.jsonl

Each rank loops a GEMM, a copy and a tiny op for ``--share-s`` seconds after a barrier
(:data:`SHARE_CASES`), and with several ranks the *sync case* (:func:`sync_seconds`); rank 0
appends one JSON line per run. :func:`measure_share` runs R = 1 and every R in rounds, dropping
rounds during which other processes loaded the CPU. ``moesim.calibration.shared_profiles``
turns the rates into per-rank profiles.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from moesim.harness import launch
from moesim.harness.host import CpuWindow, foreign_cpu, load_1m


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


def run_share(duration_s: float, ctx: launch.RankContext, sink) -> None:
    """Every rank's share rates (and sync case with several ranks); rank 0 sinks one record."""
    num_ranks = ctx.world
    barrier = launch.barrier(ctx)
    mine = share_rates(duration_s, barrier)
    if num_ranks > 1:
        mine["sync"] = sync_seconds(num_ranks, barrier)
    per_rank = launch.gather(ctx, mine)
    if ctx.rank == 0:
        sink({"share": True, "ranks": num_ranks, "threads_per_rank": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "duration_s": duration_s, "load_1m": load_1m(), "torch": torch.__version__,
              "rates": {k: [r[k]["rate"] for r in per_rank] for k in SHARE_CASES},
              **({"sync": [r["sync"] for r in per_rank]} if num_ranks > 1 else {}),
              "foreign_cpu_frac": {k: _foreign_frac([r[k]["window"] for r in per_rank])
                                   for k in SHARE_CASES}})


def _foreign_frac(windows: list[dict]) -> float:
    return foreign_cpu(windows)["foreign_cpu_frac"]


def append_line(path: str, record: dict) -> None:
    """Append one JSON line and force it to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def measure_share(ranks: tuple[int, ...], out_dir: str | Path, duration_s: float = 0.5,
                  threads: int = 1, rounds: int = 3, max_foreign: float = 0.10,
                  timeout_s: float = 600) -> dict[int, list]:
    """Per rank count R, one record per clean round: each rank's GEMM FLOP/s, copy bytes/s and
    ops/s while all R ranks run the same loop. A round runs R = 1 (one rank alone) and then
    every R, so a ratio compares neighbours in time; a round during which other processes took
    more than ``max_foreign`` of the machine is dropped and run again (at most ``4 * rounds``
    rounds). A MeasureError when too few rounds were clean."""
    from moesim.measure.runner import MeasureError

    path = Path(out_dir) / "share.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    counts = sorted(set(ranks) | {1})
    clean: dict[int, list] = {r: [] for r in counts}
    for _ in range(4 * rounds):
        for r in counts:
            try:
                launch.run_ranks(r, "moesim.measure.share", ["--share-s", str(duration_s),
                                 "--out", str(path)], threads=threads, timeout_s=timeout_s)
            except launch.HarnessError as exc:
                raise MeasureError(str(exc)) from None
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        round_ = lines[-len(counts):]
        if max(max(rec["foreign_cpu_frac"].values()) for rec in round_) <= max_foreign:
            for rec in round_:
                clean[rec["ranks"]].append(rec)
        if len(clean[1]) >= rounds:
            return clean
    raise MeasureError(f"only {len(clean[1])} of {rounds} share rounds ran without other "
                       f"processes taking > {max_foreign:.0%} of the CPU; see {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share-s", type=float, required=True, dest="share_s",
                        help="seconds each rank loops each share case")
    parser.add_argument("--out", required=True, help="JSON-lines file rank 0 appends to")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per rank")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = launch.reuse_freed_memory()
    ctx = launch.init_rank("cpu")
    if ctx.world > 1:
        launch.pin_to_core(ctx.rank, ctx.world)
    try:
        run_share(args.share_s, ctx, lambda rec: append_line(args.out, {**rec,
                                                                        "allocator": allocator}))
    finally:
        launch.close_rank(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
