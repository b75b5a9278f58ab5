"""How long ``import moesim`` takes in a fresh interpreter (target: <= 0.5 s), and first use.

Run: ``python benchmarks/bench_import.py [--runs 7]``. Each statement runs in a new subprocess
``--runs`` times; the table gives the median and best wall seconds of the whole interpreter
(start-up included, measured from outside), the bare interpreter beside them for reference.
Ends with one JSON line. Not a test: the figure depends on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATEMENTS = {
    "python (bare)": "pass",
    "import moesim": "import moesim",
    "moesim.predict(...)": "import moesim; moesim.predict('mixtral-8x7b', 'h100-sxm', 1)",
    "import moesim.scenarios": "import moesim.scenarios",
    "moesim CLI parser": "import moesim.cli as c; c.build_parser()",
}


def time_statement(code: str, runs: int, root: Path = ROOT) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(root), os.environ.get("PYTHONPATH", "")]))}
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="checkout whose moesim to time (default: this one)")
    args = parser.parse_args()
    rows = {name: time_statement(code, args.runs, args.root) for name, code in STATEMENTS.items()}
    print(f"{'statement':<26}{'median s':>10}{'best s':>9}")
    for name, times in rows.items():
        print(f"{name:<26}{statistics.median(times):>10.3f}{min(times):>9.3f}")
    print(json.dumps({"runs": args.runs, "median_s": {k: statistics.median(v)
                                                       for k, v in rows.items()},
                      "load_average_1min": os.getloadavg()[0],
                      "python": platform.python_version(),
                      "machine": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
