"""How well the cost model predicts measured MoE layers: MAPE overall, per phase, per EP size.

Run: ``python benchmarks/bench_validation.py [results/validation-cpu/results.csv]``. The table
comes from ``moesim measure scenarios/validation-cpu.yaml`` (or ``moesim run`` of that
scenario). Prints the MAPE table (percent; a phase counts where it was measured), the signed
median error (bias) per phase, the share of rows inside the predicted band, the worst rows, and
ends with one JSON line for scripts. The target on the CPU it was measured on: layer-time MAPE
<= 10 %.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from moesim.core.layer import PHASES
from moesim.measure.scenario_hook import mape_table

DEFAULT = Path(__file__).resolve().parents[1] / "results" / "validation-cpu" / "results.csv"
TARGET_PCT = 10.0


def bias_table(table: pd.DataFrame) -> pd.DataFrame:
    """Median signed error (%) per EP size: > 0 over-predicts, < 0 under-predicts."""
    cols = ["rel_error_time"] + [f"rel_error_{p}" for p in PHASES if f"rel_error_{p}" in table]
    out = table.groupby("ep")[cols].median() * 100
    out.loc["all"] = table[cols].median() * 100
    return out.rename(columns=lambda c: c.removeprefix("rel_error_"))


def worst(table: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    cols = ["ep", "experts", "top_k", "tokens", "routing", "shared_experts", "time_s",
            "measured_time_s", "rel_error_time", "measured_load_1m"]
    rows = table.reindex(table["rel_error_time"].abs().sort_values(ascending=False).index)
    return rows[[c for c in cols if c in rows]].head(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", nargs="?", default=str(DEFAULT), help="results.csv")
    args = parser.parse_args()
    table = pd.read_csv(args.table)
    pd.set_option("display.width", 200)
    mape = mape_table(table)
    print(f"{args.table}: {len(table)} configs, profiles {sorted(table['hardware'].unique())}")
    print("\nMAPE (%) of the layer time and each phase, |predicted - measured| / measured:")
    print(mape.to_string(float_format=lambda v: f"{v:.1f}"))
    print("\nmedian signed error (%), (predicted - measured) / measured:")
    print(bias_table(table).to_string(float_format=lambda v: f"{v:+.1f}"))
    print("\nworst rows:")
    print(worst(table).to_string(float_format=lambda v: f"{v:.4g}"))
    overall = float(mape.loc["all", "time"])
    verdict = "PASS" if overall <= TARGET_PCT else "FAIL"
    print(f"\nlayer-time MAPE {overall:.1f} % (target <= {TARGET_PCT:g} %): {verdict}")
    print(json.dumps({"bench": "validation", "rows": len(table), "mape_time_pct": round(overall, 2),
                      "mape_pct": mape.round(2).to_dict(orient="index"), "pass": overall <= TARGET_PCT}))


if __name__ == "__main__":
    main()
