"""Overlap, predicted beside measured: the time each config saves with the shared experts run
while the dispatch is in flight (overlap shared) and with two interleaved micro-batches
(two-batch), against overlap none (negative: the overlap mode is slower).

Run: ``python benchmarks/bench_overlap.py [results/overlap-cpu/results.csv]``. The table comes
from ``moesim measure scenarios/overlap-cpu.yaml --passes 3 --repeats 40``; every (none, shared)
pair is timed back to back. Prints per config the predicted and measured layer times and savings,
the sums per EP size, and one JSON line for scripts.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

DEFAULT = Path(__file__).resolve().parents[1] / "results" / "overlap-cpu" / "results.csv"
KEYS = ["ep", "experts", "top_k", "shared_expert_ffn", "tokens"]


def savings(table: pd.DataFrame) -> pd.DataFrame:
    """One row per config pair: times (ms) without and with the overlap, and what it saved."""
    keys = [k for k in KEYS if k in table]
    wide = table.set_index(keys + ["overlap"])[["time_s", "measured_time_s"]].unstack("overlap")
    ms = lambda col, mode: wide[(col, mode)] * 1e3  # noqa: E731
    out = {"predicted_none_ms": ms("time_s", "none"),
           "measured_none_ms": ms("measured_time_s", "none")}
    for mode in [m for m in ("shared", "two-batch") if m in wide["time_s"]]:
        out[f"predicted_saved_{mode}_ms"] = ms("time_s", "none") - ms("time_s", mode)
        out[f"measured_saved_{mode}_ms"] = ms("measured_time_s", "none") - ms("measured_time_s",
                                                                               mode)
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", nargs="?", default=str(DEFAULT), help="results.csv")
    args = parser.parse_args()
    table = savings(pd.read_csv(args.table))
    pd.set_option("display.width", 200)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    per_ep = table.groupby(level="ep")[[c for c in table if "saved" in c]].sum()
    print("\nsum of savings per EP size (ms):")
    print(per_ep.to_string(float_format=lambda v: f"{v:.2f}"))
    print(json.dumps({"bench": "overlap", "pairs": len(table),
                      "saved_ms": per_ep.round(3).to_dict(orient="index")}))


if __name__ == "__main__":
    main()
