"""``kill -9`` of ``moesim measure`` at random moments, then a rerun: nothing lost, nothing twice,
no worker left behind; and a second measurement on a busy folder is refused.

A tiny CPU scenario (ep 1: one worker process; ep 2: torchrun + two gloo ranks) is killed four
times, alternately the ``moesim measure`` process alone and its whole process group, at a seeded
random moment 0-1 s after a worker runs and the journal holds ``trial`` records (so the kills
fall at every stage: starting, between configs, inside one); after each kill no process may
still name the results folder within 10 s (the workers die with their parent), and every record
committed before the kill must still be in the journal. A last run completes: every config has exactly one record.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = """\
name: kill-measure
model: {{hidden: 16, expert_ffn: 16, experts: 8, top_k: 2, weight_dtype: fp32,
        activation_dtype: fp32, dispatch_dtype: fp32, combine_dtype: fp32}}
hardware: [cpu]
sweep:
  ep: {ep}
  tokens: {tokens}
mode: both
outputs: {{report: false, parquet: false}}
"""


def _start(scenario: Path, out: Path, repeats: int = 30) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "moesim", "measure", str(scenario), "--out", str(out),
           "--repeats", str(repeats), "--warmup", "1", "--cache-mib", "0",
           "--max-foreign", "1e9", "--attempts", "1"]  # every record counts as clean
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _naming(out: Path) -> list[int]:
    """Live processes whose command line names ``out`` (the runs and their workers)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(out).encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _records(out: Path) -> list[tuple[str, str]]:
    path = out / "measure.sqlite"
    if not path.is_file():
        return []
    with sqlite3.connect(path, timeout=30) as db:
        try:
            return db.execute("SELECT key, digest FROM records ORDER BY id").fetchall()
        except sqlite3.OperationalError:                # killed before the schema was made
            return []


def _wait_for(out: Path, proc: subprocess.Popen, records: int, within_s: float = 180.0) -> None:
    """Until the journal holds ``records`` records and a worker of ``proc`` runs (a process
    naming the run's cases file)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and proc.poll() is None:
        if len(_records(out)) >= records:
            for pid in _naming(out):
                try:
                    if b".cases-ep" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return
                except OSError:
                    continue
        time.sleep(0.1)


def _no_orphans(out: Path, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while _naming(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _naming(out), f"processes outlived moesim measure: {_naming(out)}"


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and prctl")
def test_kill_9_then_rerun_loses_nothing_and_leaves_no_worker(tmp_path):
    scenario = tmp_path / "kill.yaml"
    scenario.write_text(SCENARIO.format(ep=[1, 2], tokens=[8, 16]))
    out = tmp_path / "out"
    rng = np.random.default_rng(14)
    committed = []
    for trial in range(4):
        before = _records(out)
        proc = _start(scenario, out)
        _wait_for(out, proc, records=trial)
        time.sleep(rng.uniform(0.0, 1.0))
        if trial % 2:
            os.killpg(proc.pid, signal.SIGKILL)         # the process group
        else:
            os.kill(proc.pid, signal.SIGKILL)           # moesim measure alone
        proc.communicate()
        _no_orphans(out)
        after = _records(out)
        assert after[:len(before)] == before            # committed records survive
        assert len({k for k, _ in after}) == len(after)  # never a config twice
        committed.append(len(after))
    assert committed[0] < 4 and committed == sorted(committed), committed
    proc = _start(scenario, out)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    keys = [k for k, _ in _records(out)]
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 4 and sorted(keys) == sorted(table["measure_key"])
    _no_orphans(out)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and prctl")
def test_a_second_measurement_on_a_busy_folder_is_refused(tmp_path):
    scenario = tmp_path / "busy.yaml"
    scenario.write_text(SCENARIO.format(ep=[1], tokens=[8]))
    out = tmp_path / "out"
    first = _start(scenario, out, repeats=10 ** 7)      # runs until killed
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_naming(out)) < 2:  # its worker started
            time.sleep(0.2)
        second = _start(scenario, out)
        _, stderr = second.communicate(timeout=120)
        assert second.returncode == 2
        assert f"another moesim measure (pid {first.pid})" in stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
    _no_orphans(out)
