"""How many configs per second ``predict_many`` evaluates (target: >= 200 000/s on 2 cores).

Run: ``python benchmarks/bench_predict.py [--rows 100000]``. Prints a table and one JSON line
per sweep:

- ``tokens``: the shape of a scenario sweep, two profiles x ``rows / 2`` distinct token counts
  (Mixtral 8x7B, EP 8): every row a distinct config;
- ``tokens-deepseek``: the same with DeepSeek-V3 (256 experts, EP 8; fewer rows, as
  ``limits.MAX_PREDICT_CELLS`` bounds rows x expert slots per call);
- ``mixed``: models, hardware, tokens (powers of two), top_k, ep, placement, routing and
  overlap drawn at random, so many routing/placement groups are exercised; rows repeat configs
  (the ``distinct`` column), which ``predict_many`` evaluates once.
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


def token_sweep(rows: int, model: str) -> pd.DataFrame:
    half = rows // 2
    return pd.DataFrame({"model": model, "hardware": np.repeat(["h100-sxm", "h200-sxm"], half),
                         "tokens": np.tile(np.arange(1, half + 1), 2), "ep": 8})


def time_sweep(name: str, df: pd.DataFrame, repeats: int) -> dict:
    predict_many(df.head(100))  # warm caches (profiles, presets)
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = predict_many(df)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    assert out["time_s"].notna().all()
    median = float(np.median(times))
    distinct = len(df.drop_duplicates())
    return {"sweep": name, "rows": len(df), "distinct": distinct, "median_s": median,
            "best_s": min(times), "cpu_s": float(np.median(cpu)),
            "configs_per_s": len(df) / median, "distinct_per_s": distinct / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sweeps = {"tokens": token_sweep(args.rows, "mixtral-8x7b"),
              "tokens-deepseek": token_sweep(min(args.rows, 70_000), "deepseek-v3"),
              "mixed": build_sweep(args.rows)}
    results = [time_sweep(name, df, args.repeats) for name, df in sweeps.items()]
    load = os.getloadavg()[0]
    print(f"{'sweep':<16} {'rows':>7} {'distinct':>8} {'median s':>9} {'best s':>7} {'cpu s':>6}"
          f" {'configs/s':>10} {'distinct/s':>10}")
    for r in results:
        print(f"{r['sweep']:<16} {r['rows']:>7} {r['distinct']:>8} {r['median_s']:>9.3f} "
              f"{r['best_s']:>7.3f} {r['cpu_s']:>6.2f} {r['configs_per_s']:>10,.0f} "
              f"{r['distinct_per_s']:>10,.0f}")
    for r in results:
        print(json.dumps({**r, "load_average_1min": load, "moesim": __version__,
                          "python": platform.python_version(),
                          "machine": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
