"""What one small GEMM call costs on this CPU, per dtype (a primitive probe, nothing fitted).

Run: ``flock -x /tmp/moesim-cpu.lock python benchmarks/probe_gemm_call_cpu.py`` (one torch
thread, as the calibrated 1-thread profiles). Times ``x @ w`` for the per-expert GEMM shapes of
the held-out CPU layers that moesim under-predicts most (40-48 bf16 experts of width 136-328 at
4-10 tokens each, ``results/heldout-cpu-quiet/``) and for tiny and reference shapes, in fp32 and
bf16, with moesim's one timer, and writes ``results/gemm-call-probe-cpu/`` beside the model's
ideal compute time (``2 m k n / peak``) and what the committed profile charges (the FFN table
``efficiency.gemm`` read at M = m, plus one launch). Why: the expert phase of those layers runs
~120 us per expert where the model charges 60-90 us; a per-call fixed cost that depends on the
dtype (the M-keyed table, fitted on 384-512-wide reference experts, cannot carry it to small
ones) is the candidate the next model change must fit from primitives like these.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
#: (m, k, n): tiny calls, the held-out per-expert GEMMs (gate/up and down), a reference shape
SHAPES = [(1, 64, 64), (8, 64, 64), (8, 136, 656), (8, 328, 136), (5, 456, 272), (5, 136, 456),
          (10, 328, 400), (10, 200, 328), (64, 512, 2048), (256, 512, 2048)]


def _time(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` with moesim's one timer (``harness.timing.bench``)."""
    from moesim.harness.timing import BenchConfig, bench

    config = BenchConfig(warmup=5, repeats=repeats, min_repeats=min(9, repeats), budget_s=0.5)
    return bench(lambda _: fn(), [None], config).median_s


def measure(repeats: int) -> pd.DataFrame:
    import torch

    torch.set_num_threads(1)
    rows = []
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for m, k, n in SHAPES:
            x, w = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
            rows.append({"dtype": name, "m": m, "k": k, "n": n,
                         "measured_s": _time(lambda: x @ w, repeats)})
    return pd.DataFrame(rows)


def charged(df: pd.DataFrame, profile: str) -> tuple[np.ndarray, np.ndarray]:
    """(ideal 2mkn / peak, the profile's charge: ideal / eff(m) + one launch) per row."""
    from moesim.config import load_profile

    hw = load_profile(profile)
    peak = np.array([hw.peak_flops_per_s(d) for d in df.dtype])
    ideal = 2.0 * df.m * df.k * df.n / peak
    eff = np.array([float(hw.efficiency.gemm.at(np.array([float(m)]), d)[0])
                    for m, d in zip(df.m, df.dtype)])
    return ideal.to_numpy(), (ideal / eff).to_numpy() + hw.compute.launch_overhead_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--profile", default="cpu-epyc-zen4-1t")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "gemm-call-probe-cpu")
    args = ap.parse_args()
    from moesim.fileio import publish_folder
    from moesim.harness.device import cpu_facts

    df = measure(args.repeats)
    df["ideal_s"], df["profile_charge_s"] = charged(df, args.profile)
    df["charge_over_measured"] = (df.profile_charge_s / df.measured_s).round(3)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    meta = {"command": "python benchmarks/probe_gemm_call_cpu.py", "profile": args.profile,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "python": platform.python_version(), "facts": cpu_facts()}
    print(df.to_string(index=False))

    def write(stage: Path) -> None:
        df.to_csv(stage / "table.csv", index=False)
        (stage / "metadata.json").write_text(json.dumps(meta, indent=1, default=str))

    publish_folder(args.out, write, {"table.csv", "metadata.json"})


if __name__ == "__main__":
    main()
