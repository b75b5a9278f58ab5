"""What the primitive probes (``probe_*_cpu.py``) share: one timed call, and the table written
with its provenance (command, profile, date, commit, Python, CPU facts)."""
from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def time_call(fn, repeats: int, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` with moesim's one timer (``harness.timing.bench``)."""
    from moesim.harness.timing import BenchConfig, bench

    config = BenchConfig(warmup=warmup, repeats=repeats, min_repeats=min(warmup + 4, repeats),
                         budget_s=0.5)
    return bench(lambda _: fn(), [None], config).median_s


def publish(out: Path, table: pd.DataFrame, command: str, profile: str) -> None:
    """Print ``table`` and write ``table.csv`` + ``metadata.json`` to ``out`` atomically."""
    from moesim.fileio import publish_folder
    from moesim.harness.device import cpu_facts

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    meta = {"command": command, "profile": profile,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "python": platform.python_version(), "facts": cpu_facts()}
    print(table.to_string(index=False))

    def write(stage: Path) -> None:
        table.to_csv(stage / "table.csv", index=False)
        (stage / "metadata.json").write_text(json.dumps(meta, indent=1, default=str))

    publish_folder(out, write, {"table.csv", "metadata.json"})
