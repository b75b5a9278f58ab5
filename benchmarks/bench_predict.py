"""How many configs per second ``predict_many`` evaluates (target: >= 200 000/s on 2 cores).

Run: ``python benchmarks/bench_predict.py [--rows 100000]``. Prints a table and one JSON line.
The sweep mixes models, hardware, tokens, top_k, ep, placement, routing, overlap and dtypes so
that many routing/placement groups are exercised, as a real scenario sweep would.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time

import numpy as np
import pandas as pd

from moesim import __version__, predict_many


def build_sweep(rows: int, seed: int = 0) -> pd.DataFrame:
    grid = list(itertools.product(
        ["mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b", "olmoe-1b-7b"],
        ["h100-sxm", "h200-sxm", "b200", "mi300x"],
        [1, 8, 64],  # ep
        ["contiguous", "balanced"],
        ["uniform", "zipf:1.0"],
        ["none", "two-batch"],
    ))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(grid), rows)
    df = pd.DataFrame([grid[i] for i in pick],
                      columns=["model", "hardware", "ep", "placement", "routing", "overlap"])
    df["tokens"] = 2 ** rng.integers(0, 14, rows)
    # EP must divide the experts: Mixtral's 8 experts allow ep <= 8
    df.loc[(df["model"] == "mixtral-8x7b") & (df["ep"] > 8), "ep"] = 8
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    df = build_sweep(args.rows)
    predict_many(df.head(100))  # warm caches (profiles, presets)
    times, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = predict_many(df)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    best, median, cpu_median = min(times), float(np.median(times)), float(np.median(cpu))
    groups = df.groupby(["model", "hardware", "ep", "placement", "routing"]).ngroups
    load = os.getloadavg()[0]
    print(f"{'rows':>8} {'groups':>7} {'median s':>9} {'best s':>7} {'cpu s':>6} {'configs/s':>11}"
          f" {'load':>5}")
    print(f"{len(df):>8} {groups:>7} {median:>9.2f} {best:>7.2f} {cpu_median:>6.2f} "
          f"{len(df) / median:>11,.0f} {load:>5.2f}")
    assert out["time_s"].notna().all()
    print(json.dumps({"rows": len(df), "median_s": median, "cpu_s": cpu_median,
                      "configs_per_s": len(df) / median, "load_average_1min": load,
                      "moesim": __version__, "python": platform.python_version(),
                      "machine": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
