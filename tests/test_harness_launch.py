"""The one launcher: a stalled worker is stopped by its per-config watchdog, its whole process
group killed, and the message names the config; workers die with their parent."""
from __future__ import annotations

import os
import sys
import time

import pytest

from moesim.harness.launch import HarnessError, command, run_ranks
from moesim.measure.journal import Journal
from moesim.measure.runner import _stall_watchdog


def test_command_uses_torchrun_only_for_several_ranks():
    assert command(1, "moesim.x", ["--a"]) == [sys.executable, "-m", "moesim.x", "--a"]
    many = command(4, "moesim.x", ["--a"])
    assert many[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=4" in many
    assert many[-3:] == ["-m", "moesim.x", "--a"]
    assert "torch.distributed.run" in command(1, "moesim.x", [], torchrun_for_one=True)


def test_watchdog_stops_a_stalled_worker_and_kills_its_group():
    calls = []

    def watchdog():
        calls.append(time.monotonic())
        return "config k1 ran past the per-config timeout of 0 s" if len(calls) > 2 else None
    start = time.monotonic()
    with pytest.raises(HarnessError, match="config k1 ran past"):   # would sleep 60 s
        run_ranks(1, "timeit", ["-n", "1", "-r", "1", "import time; time.sleep(60)"],
                  poll_s=0.2, watchdog=watchdog)
    assert time.monotonic() - start < 30


def test_failing_worker_reports_its_exit_and_output():
    with pytest.raises(HarnessError, match=r"failed \(exit 1\)"):
        run_ranks(1, "timeit", ["-n", "1", "-r", "1", "raise SystemExit(1)"])


def test_stall_watchdog_is_per_config(tmp_path):
    """No record for longer than the timeout names the case in flight; each record committed
    restarts the clock and moves on to the next case."""
    path = tmp_path / "measure.sqlite"
    journal = Journal(path)
    cases = [{"key": k, "tokens": 8, "ep": 1} for k in ("k0", "k1")]
    check = _stall_watchdog(path, cases, timeout_s=0.3)
    assert check() is None
    time.sleep(0.4)
    assert "config k0" in check()
    journal.add({"key": "k0"})
    assert check() is None                              # progress: the clock restarts
    time.sleep(0.4)
    assert "config k1" in check() and "per-config timeout of 0 s" in check()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_a_child_dies_with_its_parent(tmp_path):
    """A child that set PR_SET_PDEATHSIG is killed when its parent (here an intermediate
    process that exits at once) dies, instead of living on re-parented."""
    import subprocess

    pid_file = tmp_path / "grandchild.pid"
    code = ("import os, subprocess, sys, time\n"
            "from moesim.harness.launch import die_with_parent\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
            " preexec_fn=die_with_parent)\n"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
