"""``moesim run`` publishes a results folder as a whole: a failing or killed run never leaves a
folder that mixes two runs' files, and the next run cleans what a killed one left behind."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from moesim.cli import main
from moesim import fileio as io

ROOT = Path(__file__).resolve().parents[1]


def scenario(tmp_path: Path, tokens: list[int], name: str = "s.yaml", report: bool = False) -> Path:
    path = tmp_path / name
    path.write_text(f"name: pub\nmodel: mixtral-8x7b\nhardware: [h100-sxm]\nrun: {{ep: 2}}\n"
                    f"sweep: {{tokens: {tokens}}}\noutputs: {{report: {str(report).lower()}}}\n")
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def first_run(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    assert main(["run", str(scenario(tmp_path, [1, 2])), "--out", str(out), "--no-progress"]) == 0
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def consistent(folder: Path, texts: dict[str, int]) -> None:
    """``folder`` holds exactly one run: its scenario is one of ``texts`` (text -> rows) and the
    table, metadata and (if any) report agree with it."""
    names = {p.name for p in folder.iterdir()}
    assert not [n for n in names if n.endswith(".tmp")]
    text = (folder / "scenario.yaml").read_text()
    assert text in texts
    rows = texts[text]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["rows"] == rows == len(pd.read_csv(folder / "results.csv"))
    assert len(pd.read_parquet(folder / "results.parquet")) == rows
    import hashlib
    assert meta["scenario"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_failing_write_leaves_the_old_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main(["run", str(scenario(tmp_path, [1, 2])), "--out", str(out), "--no-progress"]) == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)

    def broken(path, table):
        raise OSError("disk full")

    monkeypatch.setattr(io, "write_parquet", broken)
    with pytest.raises(OSError):
        main(["run", str(scenario(tmp_path, [4, 8, 16])), "--out", str(out), "--no-progress"])
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_sweep_value_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(scenario(tmp_path, [1, 2])), "--out", str(out), "--no-progress"]) == 0
    before = snapshot(out)
    bad = tmp_path / "bad.yaml"
    bad.write_text(scenario(tmp_path, [1, 2]).read_text().replace("[1, 2]", "[true, 16]"))
    assert main(["run", str(bad), "--out", str(out), "--no-progress"]) != 0
    assert "tokens" in capsys.readouterr().err
    assert snapshot(out) == before


def test_rerun_keeps_other_files_and_drops_old_run_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "measurement.json").write_text("{}")  # from an earlier measuring run
    (out / "report.html").write_text("old report")
    (out / "journal.sqlite").write_text("resume state")
    assert main(["run", str(scenario(tmp_path, [1, 2])), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "journal.sqlite", "metadata.json", "results.csv", "results.parquet", "scenario.yaml"]
    assert (out / "journal.sqlite").read_text() == "resume state"


def test_stale_staging_and_temp_files_are_cleaned(tmp_path):
    out = first_run(tmp_path)
    stale = tmp_path / f".out.staging-{dead_pid()}-0123abcd"
    stale.mkdir()
    (stale / "results.csv").write_text("half")
    (out / ".results.csv.x1y2.tmp").write_text("half")
    live = tmp_path / f".out.staging-{os.getpid()}-0123abcd"  # a run still going: left alone
    live.mkdir()
    assert main(["run", str(scenario(tmp_path, [1, 2])), "--out", str(out), "--no-progress"]) == 0
    assert not stale.exists() and not (out / ".results.csv.x1y2.tmp").exists()
    assert live.exists()


def test_folder_moved_aside_by_a_killed_swap_comes_back(tmp_path):
    out = first_run(tmp_path)
    aside = tmp_path / f".out.old-{dead_pid()}-0123abcd"
    os.rename(out, aside)
    io.clean_stale(out)
    assert out.is_dir() and not aside.exists()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_kill_minus_9_never_leaves_a_mixed_folder(tmp_path, seed):
    """kill -9 of ``moesim run`` (the process, or its process group) at a random moment of a run
    that replaces a finished run by a different one (drawn over the run's second half, where
    it writes); then a rerun. The folder always holds exactly one run, and no leftovers."""
    rng = random.Random(seed)
    first, second = scenario(tmp_path, [1, 2]), scenario(tmp_path, [4, 8, 16], "t.yaml", True)
    texts = {first.read_text(): 2, second.read_text(): 3}
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "moesim", "run", "--no-progress", "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd + [str(second)], env=env, check=True, capture_output=True, timeout=120)
    whole_s = time.perf_counter() - start
    subprocess.run(cmd + [str(first)], env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen(cmd + [str(second)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.5, 1.0) * whole_s)
    if seed % 2:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.wait(timeout=60)
    consistent(out, texts)
    subprocess.run(cmd + [str(second)], env=env, check=True, capture_output=True, timeout=120)
    consistent(out, {second.read_text(): 3})
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
