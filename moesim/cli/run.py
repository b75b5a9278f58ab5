"""``moesim run SCENARIO``: validate a scenario, sweep it, write table, metadata and report."""
from __future__ import annotations

import argparse
import shlex


def register(sub) -> None:
    p = sub.add_parser("run", help="run a scenario YAML into results/<name>/ (table + report)")
    p.add_argument("scenario", help="scenario YAML, e.g. scenarios/quickstart.yaml")
    p.add_argument("--out", "-o", help="output directory (default results/<name>)")
    p.add_argument("--check", action="store_true",
                   help="validate the scenario and print its size; write nothing")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show the progress bar (default: on a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.scenarios import load_scenario, run_scenario
    from moesim.scenarios.model_scope import is_model_scenario

    if is_model_scenario(args.scenario):  # whole-model scenario (scope: model)
        return _run_model_scope(args)
    scenario = load_scenario(args.scenario)
    if args.check:
        axes = ", ".join(" x ".join(a.fields) + f" ({len(a.values)})" for a in scenario.axes)
        print(f"{scenario.path}: ok: {scenario.points():,} rows = {len(scenario.hardware)} "
              f"profile(s) x [{axes or 'no sweep'}], mode {scenario.mode}")
        return 0
    command = f"moesim run {shlex.quote(args.scenario)}" + (
        f" --out {shlex.quote(str(args.out))}" if args.out else "")
    result = run_scenario(scenario, args.out, command=command, progress=args.progress)
    names = ", ".join(path.name for path in result.files.values())
    total = sum(result.timings_s.values())
    print(f"wrote {result.out_dir}/ ({len(result.table):,} rows): {names} in {total:.1f} s")
    return 0


def _run_model_scope(args: argparse.Namespace) -> int:
    from moesim.scenarios import model_scope

    if args.check:
        sc, table, _ = model_scope.load(args.scenario)
        print(f"{args.scenario}: ok: {len(table):,} rows (scope model, {sc.model})")
        return 0
    command = f"moesim run {shlex.quote(args.scenario)}"
    out = model_scope.run(args.scenario, args.out, command)
    print(f"wrote {out}/: results.csv, scenario.yaml, metadata.json, report.html")
    return 0
