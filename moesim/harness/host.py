"""The host a measurement shares: usable cores, load, and the CPU other processes took meanwhile.

``/proc/stat`` counts every process's CPU time on this machine; a timed window's
``busy - sum of every rank's own CPU`` is what other processes used while it ran
(:func:`foreign_cpu`), the measure of a contaminated timing. torch-free.
"""
from __future__ import annotations

import os
import time


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_1m() -> float | None:
    """The 1-minute load average, rounded (None where the OS has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


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


def foreign_cpu(windows: list[dict], cores: int | None = None) -> dict:
    """CPU seconds other processes used during a timed window and their share of the machine.

    ``windows``: every rank's ``CpuWindow.as_dict()`` (rank 0's wall and busy seconds, every
    rank's own CPU subtracted); share = foreign / (``cores`` x wall), ``cores`` defaulting to
    :func:`usable_cores`. > ~0.1 means the timings shared the CPU with someone else.
    ``/proc/stat`` counts 10 ms ticks, so windows shorter than ~0.2 s read only coarsely."""
    if not windows or not windows[0]:
        return {}
    own = sum(w["own_cpu_s"] for w in windows)
    foreign = max(0.0, windows[0]["busy_cpu_s"] - own)
    cores = cores or usable_cores()
    return {"window_s": windows[0]["wall_s"], "own_cpu_s": own, "foreign_cpu_s": foreign,
            "foreign_cpu_frac": foreign / max(1e-9, cores * windows[0]["wall_s"])}


def busy_share(window_s: float = 1.0) -> float:
    """Share of the machine's CPU all processes use over the next ``window_s`` seconds."""
    before = machine_busy_s()
    time.sleep(window_s)
    return (machine_busy_s() - before) / (usable_cores() * window_s)
