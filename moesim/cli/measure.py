"""``moesim measure SCENARIO``: time every config of a scenario beside its prediction.

Writes ``results.csv`` (predicted columns as ``predict_many`` names them, ``measured_*``,
``rel_error_*``, the error band), ``metadata.json`` (device, CPU model, threads, torch version,
date, command, load average), the scenario and, where ``moesim.reports`` is installed,
``report.html`` into ``--out`` (default ``results/<name>``). Finished configs are committed to
the journal ``measure.sqlite`` there as they complete: rerun the same command to resume (one
run per folder at a time). ``--device cpu|cuda`` picks the measuring device (default: the kind
the scenario's profiles describe); a profile of another kind is refused, and a CPU profile
calibrated on another CPU model than this one gets a warning.

``moesim measure --shared-profiles NAME-shared1 --ranks 2,4`` instead measures what one rank
gets of this machine when R ranks share it and writes ``NAME-shared<R>.yaml`` beside the base
profile (one rank alone, ``NAME-shared1``; see
``moesim.calibration.shared_profiles.shared_profile_doc``): the profiles EP measurements are
predicted with.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("measure", help="measure a scenario's configs beside their predictions")
    p.add_argument("scenario", nargs="?", help="scenario YAML, e.g. scenarios/validation-cpu.yaml")
    p.add_argument("--out", "-o", help="output directory (default results/<name>)")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per config")
    p.add_argument("--warmup", type=int, default=3, help="untimed forwards per config first")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: the kind of device the scenario's "
                        "profiles describe; one GPU per rank)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--timeout-s", type=float, default=600.0, dest="timeout_s",
                   help="seconds one config may run before its worker is stopped (default 600)")
    p.add_argument("--cache-mib", type=int, default=64, dest="cache_mib",
                   help="weights each forward finds outside the cache (MiB over all ranks; "
                        "default 64 on a CPU, 2x the L2 cache on a GPU)")
    p.add_argument("--max-foreign", type=float, default=0.10, dest="max_foreign",
                   help="re-measure a config if other processes took more than this share of "
                        "the CPU while it was timed (default 0.10)")
    p.add_argument("--attempts", type=int, default=3,
                   help="launches per config and pass at most while others load the CPU")
    p.add_argument("--passes", type=int, default=1,
                   help="clean measurements per config, in separate passes over the table; "
                        "the quietest (lowest median) is kept (default 1)")
    p.add_argument("--system-malloc", action="store_true", dest="system_malloc",
                   help="keep glibc's malloc defaults: tensors > 32 MiB get fresh, page-faulted "
                        "memory every forward (default: freed memory is reused)")
    p.add_argument("--fresh", action="store_true",
                   help="discard finished configs of an earlier run instead of resuming")
    share = p.add_argument_group("per-rank profiles for ranks sharing this machine")
    share.add_argument("--shared-profiles", metavar="BASE", dest="shared_base",
                       help="calibrated profile of one rank alone (same --threads), e.g. "
                            "NAME-shared1; writes NAME-shared<R>.yaml beside it instead of "
                            "measuring a scenario")
    share.add_argument("--ranks", default="2,4", help="rank counts R (default 2,4)")
    share.add_argument("--share-s", type=float, default=1.0, dest="share_s",
                       help="seconds each rank loops each share case")
    share.add_argument("--share-rounds", type=int, default=3, dest="share_rounds",
                       help="rounds of (1 rank alone, then R ranks); the median ratio is used")
    p.set_defaults(func=run)


def _quiet_enough(limit: float = 0.10, window_s: float = 1.0) -> str | None:
    """A warning when other processes use more than ``limit`` of the machine right now."""
    from moesim.harness.host import busy_share

    busy = busy_share(window_s)
    if busy > limit:
        return (f"other processes use {busy:.0%} of the CPU: timings will be noisy; configs "
                "measured while they do are measured again (--max-foreign, --attempts) and the "
                "share they took is recorded per row (measured_foreign_cpu_frac)")
    return None


def run(args: argparse.Namespace) -> int:
    from moesim.config import ConfigError

    if (args.scenario is None) == (args.shared_base is None):
        raise ConfigError("expected a scenario file or --shared-profiles BASE (not both)",
                          field="scenario")
    if args.shared_base:
        return shared_profiles(args)
    return measure_scenario(args)


def shared_profiles(args: argparse.Namespace) -> int:
    from moesim.calibration.profile_writer import write_profile
    from moesim.config import ConfigError, available_profiles, load_profile
    from moesim.calibration.shared_profiles import shared_profile_doc
    from moesim.measure.share import measure_share

    try:
        ranks = tuple(int(r) for r in args.ranks.split(","))
    except ValueError:
        raise ConfigError(f"expected comma-separated rank counts, got '{args.ranks}'",
                          field="--ranks") from None
    base = load_profile(args.shared_base)
    path = Path(args.shared_base)
    path = path if path.suffix in (".yaml", ".yml") else available_profiles()[base.name]
    family = path.stem.removesuffix("-shared1")
    with tempfile.TemporaryDirectory() as tmp:   # every record also goes into the profiles
        share = measure_share(ranks, args.out or tmp, args.share_s, args.threads,
                              args.share_rounds)
    for r in ranks:
        name = f"{family}-shared{r}"
        doc = shared_profile_doc(base, path.stem, name, share, r)
        header = [f"Per-rank profile derived by `moesim {' '.join(sys.argv[1:])}`.",
                  (f"{r} ranks x {args.threads} torch thread(s) share this machine; every rank "
                   "gets the measured share of the base"),
                  "profile's compute, memory bandwidth and op rate (sources: give the rates).",
                  "Not a fudge factor: each scale is a ratio of throughputs measured here."]
        write_profile(doc, path.with_name(f"{name}.yaml"), header)
        print(f"wrote {path.with_name(name + '.yaml')}: {doc['description']}")
    return 0


def measure_scenario(args: argparse.Namespace) -> int:
    from moesim.measure.cases import MeasureSettings, resolve_device
    from moesim.measure.journal import Journal
    from moesim.measure.scenario_hook import run_scenario_measurements
    from moesim.scenarios import evaluate, expand, load_scenario

    scenario = load_scenario(args.scenario)
    out = Path(args.out) if args.out else Path("results") / scenario.name
    start = time.perf_counter()
    table = evaluate(expand(scenario), file=str(scenario.path))
    settings = MeasureSettings(repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                               cache_bytes=args.cache_mib << 20, max_foreign=args.max_foreign,
                               attempts=args.attempts, reuse_memory=not args.system_malloc,
                               passes=args.passes, device=args.device, timeout_s=args.timeout_s)
    settings, cpu_warning = resolve_device(settings, list(table["hardware"]))
    if args.fresh:
        journal = Journal.in_folder(out)
        with journal.locked():
            journal.clear()
        journal.close()
    for warning in (cpu_warning, _quiet_enough()):
        if warning:
            print(f"moesim: warning: {warning}", file=sys.stderr)
    table = run_scenario_measurements(scenario, table, out, settings=settings,
                                      progress=lambda msg: print(msg, file=sys.stderr))
    command = "moesim " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["measure"] else None
    files = write_outputs(scenario, table, out, settings, command, time.perf_counter() - start)
    print(summary(table))
    print(f"wrote {out}/: {', '.join(p.name for p in files)}")
    return 0


def write_outputs(scenario, table, out: Path, settings, command, elapsed_s: float) -> list[Path]:
    """results.csv, scenario.yaml, metadata.json (with measurement provenance), report.html."""
    from moesim.measure.scenario_hook import measurement_metadata
    from moesim import fileio as io
    from moesim.scenarios.metadata import build_metadata

    files = [io.write_csv(out / "results.csv", table),
             io.write_text(out / "scenario.yaml", scenario.text)]
    meta = build_metadata(scenario, len(table), command, elapsed_s)
    meta["measurement"] = measurement_metadata(table, settings)
    files.append(io.write_json(out / "metadata.json", meta))
    try:
        from moesim.reports import write_report
    except ImportError:
        return files
    files.append(write_report(table, out / "report.html", meta, scenario.outputs.figures,
                              scenario.outputs.table_rows))
    return files


def summary(table) -> str:
    """Mean absolute percentage error of the layer time and of each phase, per EP size."""
    from moesim.measure.scenario_hook import mape_table

    return mape_table(table).to_string(float_format=lambda v: f"{v:.1f}")
