"""``moesim calibrate``: measure this device (or read benchmark JSON) and write a profile."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got '{text}'") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"expected rank counts >= 2, got '{text}'")
    return values


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got '{text}'")
    return value


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="run microbenchmarks and write a calibrated profile",
                       description="Run the microbenchmark suite on a device (or read its JSON) "
                       "and fit GEMM efficiency, memory bandwidth, launch overhead and "
                       "all-to-all latency/bandwidth into a profile that extends --base.")
    p.add_argument("--out", required=True, type=Path,
                   help="profile to write, e.g. hardware_profiles/calibrated/NAME.yaml")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--base", help="datasheet profile to extend (default: cpu, or by GPU name)")
    p.add_argument("--quick", action="store_true",
                   help="small suite: at most 170 s of measurement on any device (full suite: "
                        "at most ~38 min); points that would overrun are skipped and listed")
    p.add_argument("--budget-s", type=_seconds, dest="budget_s",
                   help="total seconds of measurement, shared by the sections in the plan's "
                        "proportions (default: 170 with --quick, 2280 without)")
    p.add_argument("--from-json", action="append", default=[], metavar="FILE",
                   help="fit from benchmark JSON (suite output or pytest-benchmark "
                        "--benchmark-json); repeat to merge files")
    p.add_argument("--threads", type=int, help="CPU torch threads (default: all usable cores)")
    p.add_argument("--raw-out", type=Path, help="folder for raw measurements (JSON + CSV)")
    p.add_argument("--sections", type=lambda s: tuple(s.split(",")),
                   help="subset of ops,copy,gemm,grouped,alltoall")
    p.add_argument("--a2a-ranks", type=_ints, help="all-to-all rank counts (CPU default 2,4)")
    p.add_argument("--memory-source", default="stream", choices=["stream", "copy"],
                   help="memory bandwidth from the layer's streaming kernels or a large copy")
    p.add_argument("--domain-size", type=int, help="scale_up.domain_size to write")
    p.add_argument("--gemm-tile-m", type=int, dest="tile_m",
                   help="compute.gemm_tile_m to write (default: 1 on CPUs, else the base's)")
    p.add_argument("--a2a-fit-ranks", type=int, dest="a2a_world",
                   help="rank count whose all-to-all fit goes into the profile (default: the "
                        "smallest measured; all are kept in fit_quality)")
    p.add_argument("--name", help="profile name (default: the --out file name)")
    p.add_argument("--from-aic", metavar="SYSTEM", dest="from_aic",
                   help="fit from AIConfigurator's measured tables for SYSTEM (e.g. h200_sxm; "
                        "needs pip install 'moesim[aic]') instead of measuring")
    p.add_argument("--backend", choices=["trtllm", "vllm", "sglang"],
                   help="with --from-aic: the engine whose kernels the profile describes")
    p.add_argument("--version", help="with --from-aic: moe_perf engine version (default: the "
                                     "largest table)")
    p.set_defaults(func=run)


def run_aic(args: argparse.Namespace) -> int:
    from moesim.calibration.aic.write import calibrate_from_aic
    from moesim.config import ConfigError

    if not args.backend or not args.base:
        print("moesim: error: --from-aic needs --backend and --base", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        profile, doc = calibrate_from_aic(args.from_aic, args.backend, args.base, args.out,
                                          args.version, args.name,
                                          "moesim " + shlex.join(sys.argv[1:]))
    except ConfigError as exc:
        print(f"moesim: error: {exc}", file=sys.stderr)
        return 1
    q = doc["fit_quality"]
    lines = [f"wrote {profile.name} (base {args.base}) in {time.perf_counter() - started:.0f} s",
             f"  launch floor {profile.compute.launch_overhead_s * 1e6:.2f} us"]
    for key, gq in q["gemm"].items():
        lines.append(f"  gemm {key:<10} in-sample {gq['in_sample']['mape_pct']:.1f}% "
                     f"left-out {gq['holdout'].get('mape_pct', float('nan')):.1f}% MAPE "
                     f"({gq['holdout']['rows']} rows)")
    for key, aq in q["alltoall"].items():
        lines.append(f"  {key:<24} left-out {aq['holdout'].get('mape_pct', float('nan')):.1f}% MAPE")
    print("\n".join(lines))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.from_aic:
        return run_aic(args)
    from moesim.calibration.session import Request
    from moesim.calibration.session import run as calibrate_run
    from moesim.harness.alltoall import HarnessError

    req = Request(out=args.out, device=args.device, base=args.base, quick=args.quick,
                  from_json=args.from_json, threads=args.threads, raw_out=args.raw_out,
                  sections=args.sections, a2a_ranks=args.a2a_ranks,
                  memory_source=args.memory_source, domain_size=args.domain_size,
                  tile_m=args.tile_m, a2a_world=args.a2a_world, name=args.name,
                  budget_s=args.budget_s,
                  command="moesim " + shlex.join(sys.argv[1:]))
    started = time.perf_counter()
    try:
        profile, doc = calibrate_run(req)
    except HarnessError as exc:
        print(f"moesim: error: {exc}", file=sys.stderr)
        return 1
    print(summary(profile, doc, time.perf_counter() - started))
    return 0


def _mem_bps(profile) -> float:
    return (profile.memory.bandwidth_bytes_per_s
            * float(profile.efficiency.memory_bandwidth.at(1.0)))


def summary(profile, doc: dict, seconds: float) -> str:
    """Human lines plus one JSON line with the key fitted numbers."""
    q = doc["fit_quality"]
    lines = [f"wrote {profile.name} (base {doc['base']}) in {seconds:.0f} s",
             f"  launch overhead   {profile.compute.launch_overhead_s * 1e6:.2f} us/op",
             f"  memory bandwidth  {_mem_bps(profile) / 1e9:.2f} GB/s"]
    for dtype, gq in q.get("gemm", {}).items():
        hold = gq.get("holdout", {})
        lines.append(f"  dense gemm {dtype:<5} in-sample {gq['in_sample']['mean_abs_pct']:.1f}% "
                     f"held-out {hold.get('mean_abs_pct', float('nan')):.1f}% mean |error|")
    for dtype, fq in q.get("gemm_layer_ffn", {}).items():
        hold = fq.get("holdout", {})
        gap = q.get("dense_gemm_table_on_layer_ffn", {}).get(dtype, {})
        lines.append(f"  expert FFN {dtype:<5} in-sample {fq['in_sample']['mean_abs_pct']:.1f}% "
                     f"held-out shape {hold.get('mean_abs_pct', float('nan')):.1f}%"
                     + (f" (dense GEMM table alone: {gap['bias_pct']:+.1f}% bias)" if gap else ""))
    for key in ("scale_up", "scale_out"):
        if key in q:
            lines.append(f"  {key:<9} latency {getattr(profile, key).latency_s * 1e6:.0f} us, "
                         f"{q[key]['bytes_per_s'] / 1e9:.2f} GB/s, held-out "
                         f"{q[key].get('holdout', {}).get('mean_abs_pct', float('nan')):.1f}%")
    skipped = (doc.get("provenance") or {}).get("skipped_points") or []
    if skipped:
        lines.append(f"  skipped {len(skipped)} point(s) that would overrun their section's time "
                     "cap (provenance.skipped_points)")
    for line in q.get("bound_violations", []):
        lines.append(f"  bounded fit: {line}")
    key_numbers = {"profile": profile.name, "seconds": round(seconds, 1),
                   "launch_overhead_s": profile.compute.launch_overhead_s,
                   "fit_quality": {k: q[k] for k in ("gemm", "gemm_layer_ffn", "scale_up")
                                   if k in q}}
    return "\n".join(lines) + "\n" + json.dumps(key_numbers)
