"""Mutation fuzzing of moesim's inputs: clean / traceback / hang / OOM / non-finite counts.

Target (issue 14): 0 tracebacks, 0 hangs over 20 s, 0 runs above 2 GB, 0 non-finite outputs over
10,000 mutants. Each mutant runs in its own forked process (time limit ``--timeout-s``, address
space capped at its start + ``--mem-gb`` via setrlimit, peak RSS above it also counted as OOM).

Run: ``python benchmarks/bench_fuzz.py --count 10000 [--start 0] [--jobs 1] [--log FILE]``.
Not a timing measurement (share the CPU lock: ``flock -s /tmp/moesim-cpu.lock ...``). Prints
progress, the findings (seed, input, mutations, error) and a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moesim import __version__  # noqa: E402
from moesim.fuzz import OUTCOMES, corpus, mutant, run_one, summarise  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--jobs", type=int, default=1, help="mutants in flight at once")
    ap.add_argument("--timeout-s", type=float, default=20.0)
    ap.add_argument("--mem-gb", type=float, default=2.0)
    ap.add_argument("--log", type=Path, help="write every outcome as a JSON line here")
    args = ap.parse_args(argv)
    files = corpus()
    import moesim.reports  # noqa: F401 - imported once, before the forks
    import moesim.scenarios  # noqa: F401

    start = time.perf_counter()
    results = []
    log = args.log.open("w") if args.log else None

    def one(seed: int) -> dict:
        return run_one(mutant(seed, files), args.timeout_s, int(args.mem_gb * 2 ** 30))

    with ThreadPoolExecutor(args.jobs) as pool:
        for r in pool.map(one, range(args.start, args.start + args.count)):
            results.append(r)
            if log:
                log.write(json.dumps(r) + "\n")
                log.flush()
            if r["outcome"] != "clean":
                print(f"[{r['outcome']}] seed {r['seed']} {r['source']} {r['steps']}: "
                      f"{r['note']}", flush=True)
            if len(results) % 250 == 0:
                print(f"... {len(results)} mutants, {summarise(results)}", flush=True)
    elapsed = time.perf_counter() - start
    counts = summarise(results)
    ran = sum(r.get("note") == "ran" for r in results)
    rejected = sum(str(r.get("note", "")).startswith("ConfigError") for r in results)
    print(f"\n{'outcome':<12}{'mutants':>10}   target")
    for name in OUTCOMES:
        print(f"{name:<12}{counts[name]:>10}   {'-' if name == 'clean' else '0'}")
    print(f"(clean = {rejected} clean errors + {ran} runs with finite outputs + "
          f"{counts['clean'] - rejected - ran} valid but not run)")
    peak = max((r["max_rss_bytes"] for r in results), default=0)
    print(f"{len(results)} mutants (seeds {args.start}..{args.start + args.count - 1}) in "
          f"{elapsed:.0f} s; slowest {max(r['elapsed_s'] for r in results):.1f} s; "
          f"peak RSS {peak / 2 ** 30:.2f} GiB")
    print(json.dumps({"bench": "fuzz", "mutants": len(results), "start": args.start, **counts,
                      "clean_errors": rejected, "ran": ran, "elapsed_s": round(elapsed, 1),
                      "peak_rss_bytes": peak, "moesim": __version__,
                      "python": platform.python_version(), "machine": platform.machine()}))
    return 0 if all(counts[n] == 0 for n in OUTCOMES if n != "clean") else 1


if __name__ == "__main__":
    sys.exit(main())
