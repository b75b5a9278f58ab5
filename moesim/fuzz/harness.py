"""Run mutants, each in its own forked process with a time limit and a memory cap, and sort the
outcomes: ``clean`` (a ConfigError, or finite non-negative results), ``traceback`` (any other
exception), ``hang`` (killed at the time limit), ``oom`` (MemoryError, killed, or peak RSS over
the cap) and ``nonfinite`` (an output that is NaN, infinite or negative).

The parent imports moesim once; a fork per mutant then starts in milliseconds, and whatever a
mutant does (allocate without bound, loop for good, crash the interpreter) stays in its child.
"""
from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from moesim.fuzz.mutate import Mutant

OUTCOMES = ("clean", "traceback", "hang", "oom", "nonfinite")
#: A valid scenario above this many rows is checked but not evaluated (a legitimate big sweep
#: takes longer than the time limit; its validation is what the fuzzer exercises).
MAX_RUN_ROWS = 5_000


def exercise(m: Mutant, work: Path) -> str:
    """Load the mutant as moesim would and predict with it; returns a note. Raises on failure;
    a non-finite or negative output raises ``NonFinite``."""
    from moesim import predict_many
    from moesim.config import ConfigError, load_model, load_profile
    from moesim.scenarios import load_scenario, run_scenario

    path = work / ("input.yaml" if m.kind != "model" else "model.yaml")
    path.write_bytes(m.text)
    try:
        if m.kind == "scenario":
            sc = load_scenario(path)
            if sc.points() > MAX_RUN_ROWS or sc.mode != "predict":
                return "valid (not run: large or measuring)"
            table = run_scenario(sc, work / "out", command="fuzz", progress=False).table
        else:
            if m.kind == "profile":
                load_profile(path)
            else:
                load_model(path)
            model, hw = (str(path), "h100-sxm") if m.kind == "model" else ("mixtral-8x7b",
                                                                            str(path))
            import pandas as pd

            table = predict_many(pd.DataFrame({"model": model, "hardware": hw,
                                               "tokens": [1, 64, 8192]}))
    except ConfigError as exc:
        return f"ConfigError: {str(exc)[:200]}"
    _check_finite(table)
    return "ran"


class NonFinite(Exception):
    """An output column holds NaN, inf or a negative number."""


def _check_finite(table) -> None:
    from moesim.result import OUTPUT_COLUMNS

    for name, kind in OUTPUT_COLUMNS.items():
        if kind == "float" and name in table.columns:
            values = table[name].to_numpy(dtype=float)
            if not (np.isfinite(values).all() and (values >= 0).all()):
                raise NonFinite(f"{name}: {values[~(np.isfinite(values) & (values >= 0))][:3]}")


def _child(m: Mutant, write_fd: int, mem_bytes: int, work: Path) -> None:
    """In the forked child: cap memory, run, report one JSON line, exit without cleanup."""
    status = {}
    try:
        vm = _vm_size()
        resource.setrlimit(resource.RLIMIT_AS, (vm + mem_bytes, vm + mem_bytes))
        status = {"outcome": "clean", "note": exercise(m, work)}
    except MemoryError:
        status = {"outcome": "oom", "note": "MemoryError"}
    except NonFinite as exc:
        status = {"outcome": "nonfinite", "note": str(exc)}
    except BaseException as exc:  # noqa: BLE001 - every escape is a finding
        status = {"outcome": "traceback", "note": f"{type(exc).__name__}: {exc}"[:300],
                  "trace": traceback.format_exc()[-2000:]}
    finally:
        os.write(write_fd, json.dumps(status, default=str).encode())
        os._exit(0)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run_one(m: Mutant, timeout_s: float = 20.0, mem_bytes: int = 2 << 30) -> dict:
    """Outcome of one mutant in a forked child (time limit, address-space cap of ``mem_bytes``
    over what the child starts with; a peak RSS above ``mem_bytes`` also counts as oom)."""
    work = Path(tempfile.mkdtemp(prefix="moesim-fuzz-"))
    try:
        return _run_forked(m, timeout_s, mem_bytes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_forked(m: Mutant, timeout_s: float, mem_bytes: int, work: Path) -> dict:
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(m, write_fd, mem_bytes, work)
    os.close(write_fd)
    chunks, hung = [], False
    deadline = start + timeout_s
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            hung = True
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([read_fd], [], [], left)
        if ready:
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read_fd)
    _, status, usage = os.wait4(pid, 0)
    result = {"seed": m.seed, "kind": m.kind, "source": m.source, "steps": list(m.steps),
              "elapsed_s": round(time.perf_counter() - start, 3),
              "max_rss_bytes": usage.ru_maxrss * 1024}
    if hung:
        return {**result, "outcome": "hang", "note": f"killed after {timeout_s} s"}
    try:
        result.update(json.loads(b"".join(chunks)))
    except ValueError:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return {**result, "outcome": "oom" if sig == signal.SIGKILL else "traceback",
                "note": f"child died (signal {sig}, status {status})"}
    if result["max_rss_bytes"] > mem_bytes and result["outcome"] == "clean":
        result.update(outcome="oom", note=f"peak RSS {result['max_rss_bytes'] / 2**30:.2f} GiB")
    return result


def summarise(results: list[dict]) -> dict[str, int]:
    counts = Counter(r["outcome"] for r in results)
    return {name: counts.get(name, 0) for name in OUTCOMES}
