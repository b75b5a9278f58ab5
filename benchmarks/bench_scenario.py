"""Time a 100 000-point scenario from YAML to CSV, Parquet and HTML report.

    python benchmarks/bench_scenario.py [--out DIR] [--variant grid|tokens]

``grid`` (default): DeepSeek-V3, 4 profiles x 250 token counts x 5 EP x 4 routings x 5 top-k.
``tokens``: the shape of issue 13's measurement, 2 profiles x 50 000 token counts (every row a
different ``tokens``). Target: <= 10 s end to end (import included) on a 2-core machine.

Prints a table of the stages (seconds) and ends with one JSON line. Not a test: the figure
depends on the machine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SCENARIO = """\
name: bench-100k
description: >
  Benchmark: DeepSeek-V3 on four profiles, 250 token counts x 5 EP sizes x 4 routing skews x
  5 top-k values = 100 000 rows.
model: deepseek-v3
hardware: [h100-sxm, h200-sxm, b200, mi300x]
sweep:
  tokens: {start: 16, stop: 4000, step: 16}
  ep: [8, 16, 32, 64, 128]
  routing: [uniform, "zipf:0.5", "zipf:1.0", "zipf:1.5"]
  top_k: [4, 6, 8, 10, 12]
"""
TOKENS_SCENARIO = """\
name: bench-100k-tokens
description: Benchmark, 2 profiles x 50 000 token counts = 100 000 rows.
model: mixtral-8x7b
hardware: [h100-sxm, b200]
sweep:
  tokens: {start: 1, stop: 50000, step: 1}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="output directory (default: a temporary one)")
    parser.add_argument("--variant", choices=["grid", "tokens"], default="grid")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "bench-100k"
        yaml_path = Path(tmp) / "bench-100k.yaml"
        yaml_path.write_text(SCENARIO if args.variant == "grid" else TOKENS_SCENARIO,
                             encoding="utf-8")
        stats = run(yaml_path, out)
        sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    print(f"{'stage':<22}{'seconds':>10}")
    for stage, seconds in stats["timings_s"].items():
        print(f"{stage:<22}{seconds:>10.2f}")
    print(f"{'total (YAML -> HTML)':<22}{stats['total_s']:>10.2f}")
    print(f"rows: {stats['rows']:,}; files: " +
          ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sorted(sizes.items())))
    print(json.dumps({**stats, "file_bytes": sizes}))


def run(yaml_path: Path, out: Path) -> dict:
    start = time.perf_counter()
    import moesim.scenarios as scenarios  # import time counts: the CLI pays it too

    imported = time.perf_counter()
    scenario = scenarios.load_scenario(yaml_path)
    loaded = time.perf_counter()
    result = scenarios.run_scenario(scenario, out, command="bench_scenario.py", progress=False)
    total = time.perf_counter() - start
    timings = {"import": imported - start, "load + validate": loaded - imported,
               **result.timings_s}
    return {"rows": len(result.table), "total_s": round(total, 3),
            "timings_s": {k: round(v, 3) for k, v in timings.items()}}


if __name__ == "__main__":
    main()
