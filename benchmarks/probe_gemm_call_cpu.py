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
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_common import ROOT, publish, time_call  # noqa: E402
#: (m, k, n): tiny calls, the held-out per-expert GEMMs (gate/up and down), a reference shape
SHAPES = [(1, 64, 64), (8, 64, 64), (8, 136, 656), (8, 328, 136), (5, 456, 272), (5, 136, 456),
          (10, 328, 400), (10, 200, 328), (64, 512, 2048), (256, 512, 2048)]


def measure(repeats: int) -> pd.DataFrame:
    import torch

    torch.set_num_threads(1)
    rows = []
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for m, k, n in SHAPES:
            x, w = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
            rows.append({"dtype": name, "m": m, "k": k, "n": n,
                         "measured_s": time_call(lambda: x @ w, repeats, 5)})
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
    df = measure(args.repeats)
    df["ideal_s"], df["profile_charge_s"] = charged(df, args.profile)
    df["charge_over_measured"] = (df.profile_charge_s / df.measured_s).round(3)
    publish(args.out, df, "python benchmarks/probe_gemm_call_cpu.py", args.profile)

if __name__ == "__main__":
    main()
