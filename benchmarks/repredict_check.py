"""Behaviour check for refactors: re-predict every prediction table moesim ships and compare.

    python benchmarks/repredict_check.py --save DIR      # with the code before the change
    python benchmarks/repredict_check.py --compare DIR   # with the code after it

Tables: every scenario under ``scenarios/`` (its predicted columns; measurement is not run), the
committed ``results/*/scenario.yaml`` sweeps, ``benchmarks/placement_deepseek.py``'s comparison
(minus its wall-clock ``search_s`` column), and a set of ``predict`` calls that go through the
other paths (Placement objects, explicit ``q``, Monte Carlo, trace routing, placement files,
offload). ``--compare`` requires every column to be equal exactly (floats bit for bit) and prints
one line per table; it exits 1 on any difference. Not a test: the tables take ~1 min to build.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def scenario_tables() -> dict[str, pd.DataFrame]:
    from moesim.config import ConfigError
    from moesim.scenarios import evaluate, expand, load_scenario

    paths = sorted((ROOT / "scenarios").glob("*.yaml")) + sorted(ROOT.glob("results/*/scenario.yaml"))
    out = {}
    for path in paths:
        name = f"{path.parent.name}/{path.stem}"
        try:
            scenario = load_scenario(path)
        except ConfigError as exc:  # e.g. a profile that a GPU session writes
            print(f"skipped   {name}: {exc}")
            continue
        if scenario.mode == "measure":
            continue
        out[name] = evaluate(expand(scenario), progress=False)
    return out


def placement_table() -> pd.DataFrame:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from placement_deepseek import PHASES, ROUTINGS, run

    with contextlib.redirect_stdout(io.StringIO()):  # its printed tables
        table = run(ROUTINGS, None, list(PHASES), [32, 64], 0.3, 3)
    return table.drop(columns=["search_s"])


def api_table(tmp: Path) -> pd.DataFrame:
    """Scalar results of ``predict`` on the paths a scenario table does not take."""
    from moesim import predict
    from moesim.core import placement, routing
    from moesim.offload import predict_offload

    rng = np.random.default_rng(0)
    trace = tmp / "trace.npy"
    np.save(trace, np.stack([rng.choice(64, 8, replace=False) for _ in range(512)]))
    place_file = tmp / "place.yaml"
    place_file.write_text("devices:\n" + "".join(
        f"  - [{', '.join(str(e) for e in range(d, 64, 8))}]\n" for d in range(8)))
    q = routing.inclusion_probs("zipf:1.2", 256, 8)
    obj = placement.replicated(q, 64, 64)
    calls = {
        "placement-object+q": lambda: predict("deepseek-v3", "h100-sxm", 512, placement=obj, q=q),
        "q-alone": lambda: predict("olmoe-1b-7b", "h100-sxm", 64, ep=8, placement="balanced",
                                   q=routing.inclusion_probs("zipf:1.0", 64, 8)),
        "placement-object-mc": lambda: predict("deepseek-v3", "h100-sxm", 128, placement=obj,
                                               q=q, mode="montecarlo", samples=50),
        "montecarlo": lambda: predict("deepseek-v3", "b200", 256, ep=32, routing="zipf:1.0",
                                      overlap="two-batch", mode="montecarlo", samples=64),
        "montecarlo-drop": lambda: predict("mixtral-8x7b", "h100-sxm", 512, ep=8,
                                           drop_tokens=True, mode="montecarlo", samples=32),
        "trace": lambda: predict("olmoe-1b-7b", "h100-sxm", 64, ep=8, routing=f"trace:{trace}"),
        "trace-mc": lambda: predict("olmoe-1b-7b", "h100-sxm", 64, ep=8,
                                    routing=f"trace:{trace}", mode="montecarlo", samples=16),
        "placement-file": lambda: predict("olmoe-1b-7b", "h100-sxm", 64, ep=8,
                                          placement=str(place_file), routing="zipf:1.0"),
    }
    rows = []
    for name, call in calls.items():
        r = call()
        rows.append({"call": name, "time_s": r.time_s, "tokens_per_s": r.tokens_per_s,
                     "load_imbalance": r.load_imbalance, "drop_rate": r.drop_rate,
                     **{f"{k}_s": v for k, v in r.breakdown_s.items()},
                     **{k: v for k, v in r.extra.items() if isinstance(v, float)}})
    for name, kw in {"offload": {}, "offload-trace": {"trace": str(trace)}}.items():
        off = predict_offload("olmoe-1b-7b", "rtx-4090", batch=4, routing="zipf:1.0", **kw)
        rows.append({"call": name, "time_s": off.step_time_s, "tokens_per_s": off.tokens_per_s,
                     **{f"{k}_s": v for k, v in off.breakdown_s.items()}})
    return pd.DataFrame(rows)


def build(tmp: Path) -> dict[str, pd.DataFrame]:
    return {**scenario_tables(), "placement-deepseek": placement_table(), "api": api_table(tmp)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="write the tables (parquet) into this directory")
    group.add_argument("--compare", help="compare with the tables saved in this directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tables = build(Path(tmp))
    if args.save:
        out = Path(args.save)
        for name, table in tables.items():
            path = out / f"{name.replace('/', '__')}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            table.reset_index(drop=True).to_parquet(path)
        print(f"saved {len(tables)} tables to {out}")
        return 0
    failed = 0
    for name, table in tables.items():
        path = Path(args.compare) / f"{name.replace('/', '__')}.parquet"
        try:
            pd.testing.assert_frame_equal(table.reset_index(drop=True), pd.read_parquet(path),
                                          check_exact=True, check_dtype=False)
            print(f"same      {name:<45} {len(table):>7} rows x {table.shape[1]} columns")
        except (AssertionError, FileNotFoundError) as exc:
            failed += 1
            print(f"DIFFERENT {name}: {str(exc).splitlines()[0:3]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
