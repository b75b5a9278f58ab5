"""How many whole-model configs per second ``predict_many`` evaluates (target >= 50 000/s).

Run: ``flock -x /tmp/moesim-cpu.lock python benchmarks/bench_wholemodel.py [--rows 100000]``.
The sweep mixes models, hardware, phases, batches, contexts, prompt lengths, TP/DP layouts and
KV dtypes, as a serving-capacity sweep would. Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import timeit

import numpy as np
import pandas as pd

from moesim.serving import predict_many  # dispatches scope: model rows to the whole-model path


def build_sweep(rows: int, seed: int = 0) -> pd.DataFrame:
    grid = list(itertools.product(
        ["mixtral-8x7b", "deepseek-v3", "qwen3-30b-a3b", "gpt-oss-120b"],
        ["h100-sxm", "h200-sxm", "b200", "mi300x"],
        ["prefill", "decode"], [(8, 1), (1, 8), (2, 4)], ["bf16", "fp8"]))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(grid), rows)
    df = pd.DataFrame([(m, h, p, t, d, kv) for m, h, p, (t, d), kv in (grid[i] for i in pick)],
                      columns=["model", "hardware", "phase", "tp", "dp_attn", "kv_dtype"])
    df["scope"] = "model"
    df["batch"] = 2 ** rng.integers(0, 10, rows)
    df["context"] = 2 ** rng.integers(8, 16, rows)
    df["prompt_len"] = 2 ** rng.integers(7, 13, rows)
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    df = build_sweep(args.rows)
    predict_many(df.head(200))  # warm caches (profiles, presets)
    out = {}
    times = timeit.repeat(lambda: out.update(table=predict_many(df)), number=1,
                          repeat=args.repeats)
    assert np.isfinite(out["table"]["step_time_s"]).all()
    rate = args.rows / float(np.median(times))
    print(f"{'rows':>8} {'median s':>9} {'configs/s':>10}\n"
          f"{args.rows:>8} {np.median(times):>9.3f} {rate:>10.0f}")
    print(json.dumps({"rows": args.rows, "median_s": float(np.median(times)),
                      "configs_per_s": rate, "machine": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
