"""The one launcher and worker skeleton of moesim's multi-process measurements.

Launcher side, :func:`run_ranks`: ``python -m torch.distributed.run --standalone
--nproc_per_node=N -m MODULE ARGS`` (or ``python -m MODULE`` for one rank where the worker runs
without torchrun), in its own process group, with ``OMP_NUM_THREADS`` set. The workers die
with their parent (:func:`die_with_parent`: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, set by the
launcher in the torchrun process and by every rank on start), so a ``kill -9`` of ``moesim
measure`` never leaves a rank running beside the next run. A ``watchdog`` called every
``poll_s`` may stop the run (per-config timeouts: ``moesim.measure.runner``); the whole
group is then killed.

Worker side, :func:`init_rank`: rank, world size and device from torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), the process group on the device's backend (NCCL on
GPUs, gloo on CPUs: :func:`moesim.harness.device.plan_for`), :func:`gather` to collect one object
per rank, and the CPU rank's process settings (:func:`pin_to_core`, :func:`reuse_freed_memory`).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

PR_SET_PDEATHSIG = 1


class HarnessError(RuntimeError):
    """A benchmark process failed (not an input error); the message carries its output."""


def die_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``);
    if the parent is already gone (re-parented to init), exit now. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and os.getppid() == 1:
        os._exit(1)
    return ok


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(nproc: int, module: str, args: list[str], torchrun_for_one: bool = False) -> list[str]:
    """The command line: torchrun on one node with a free port (``nproc`` ranks), or plain
    ``python -m module`` for one rank unless ``torchrun_for_one``."""
    if nproc == 1 and not torchrun_for_one:
        return [sys.executable, "-m", module, *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
            "-m", module, *args]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_ranks(nproc: int, module: str, args: list[str], *, threads: int = 1,
              timeout_s: float | None = None, watchdog: Callable[[], str | None] | None = None,
              poll_s: float = 0.5, torchrun_for_one: bool = False) -> str:
    """Run ``module`` with ``nproc`` ranks; returns its output. A HarnessError when it fails,
    runs past ``timeout_s`` or ``watchdog()`` returns a reason to stop (the group is killed)."""
    cmd = command(nproc, module, args, torchrun_for_one)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.monotonic()
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent)
        try:
            reason = _wait(proc, start, timeout_s, watchdog, poll_s)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
        log.seek(0)
        output = log.read()
    if reason:
        raise HarnessError(f"{reason}: {' '.join(cmd)}\n{output[-4000:]}")
    if proc.returncode != 0:
        raise HarnessError(f"{module} with {nproc} rank(s) failed (exit {proc.returncode}): "
                           f"{' '.join(cmd)}\n{output[-4000:]}")
    return output


def _wait(proc, start: float, timeout_s, watchdog, poll_s) -> str | None:
    while True:
        try:
            proc.wait(timeout=poll_s)
            return None
        except subprocess.TimeoutExpired:
            pass
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return f"exceeded {timeout_s:.0f} s"
        reason = watchdog() if watchdog else None
        if reason:
            return reason


@dataclass(frozen=True)
class RankContext:
    """One rank: its index, the world size, its torch device and the process group backend."""

    rank: int
    world: int
    device: object
    backend: str | None
    local_rank: int = 0
    node: int = 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def init_rank(device: str = "cpu", timeout_s: float = 600,
              always_group: bool = False) -> RankContext:
    """This process's rank under torchrun (one rank without it): device ``cuda:LOCAL_RANK``
    (set current) or ``cpu``, and the process group on the device's backend when there are
    several ranks (or ``always_group`` under torchrun). The rank dies with its parent."""
    import torch
    import torch.distributed as dist

    from moesim.harness.device import plan_for

    die_with_parent()
    plan = plan_for(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    where = torch.device(plan.rank_device(local))
    if where.type == "cuda":
        torch.cuda.set_device(where)
    world = int(os.environ.get("WORLD_SIZE", "1")) if "RANK" in os.environ else 1
    if world == 1 and not (always_group and "RANK" in os.environ):
        return RankContext(0, 1, where, None, local)
    dist.init_process_group(plan.backend, timeout=timedelta(seconds=timeout_s))
    return RankContext(dist.get_rank(), dist.get_world_size(), where, plan.backend, local,
                       int(os.environ.get("GROUP_RANK", "0")))


def close_rank(ctx: RankContext) -> None:
    import torch.distributed as dist

    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def gather(ctx: RankContext, obj) -> list:
    """Every rank's ``obj`` (picklable), on every rank, in rank order."""
    if not ctx.distributed or ctx.world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: RankContext):
    """The group's barrier, or None with one rank."""
    if not ctx.distributed or ctx.world == 1:
        return None
    import torch.distributed as dist

    return dist.barrier


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
