"""Placement strategies for DeepSeek-V3 on H800: gain over contiguous, with and without
replication, and how each placement holds up when the routing drifts.

Run: ``python benchmarks/placement_deepseek.py [--out results/placement-deepseek]
[--trace FILE.npz@LAYER]``. Prints one table per (EP, routing, phase) and writes
``table.csv`` and ``metadata.json`` (provenance: command, git commit, versions, profile digest).

Setup: DeepSeek-V3 (256 experts, top-8 of 8 groups with top-4 groups) on h800-sxm (8 GPUs per
NVLink node), EP 32 (4 nodes, 32 redundant slots) and EP 64 (8 nodes, 64 redundant slots: 288
slots would not divide by 64). Decode: 128 tokens per GPU with the per-expert (DeepEP
low-latency) all-to-all; prefill: 4096 tokens per GPU with the hierarchical (DeepEP internode
normal) all-to-all, where keeping groups on nodes (EPLB's hierarchical policy) saves network
copies. Routing: zipf:1.2 and lognormal:1.0 (seeded), or per-batch loads of a recorded trace.
Drift: each expert's share times exp(0.3 N(0,1)), 3 samples; ``stale`` is the placement chosen
on the original routing timed under the drifted ones, ``fresh`` a re-run of the strategy on them.
All times are moesim predictions (datasheet profile), not measurements.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PHASES = {"decode": (128, "per-expert"), "prefill": (4096, "hierarchical")}
EP_REDUNDANT = {32: 32, 64: 64}
ROUTINGS = ("zipf:1.2", "lognormal:1.0")


def run(routings, trace: str | None, phases, eps, drift: float, samples: int) -> pd.DataFrame:
    from moesim.core.routing import inclusion_probs
    from moesim.placement_search.comparison import compare, format_table, make_problem
    from moesim.placement_search.traces import load_batch_loads

    frames = []
    sources = [(r, None) for r in routings] + ([("trace", trace)] if trace else [])
    for ep in eps:
        for phase in phases:
            tokens, kernel = PHASES[phase]
            problem = make_problem("deepseek-v3", "h800-sxm", tokens, ep, EP_REDUNDANT[ep],
                                   a2a_kernel=kernel)
            for label, path in sources:
                loads = (load_batch_loads(path, 256, tokens * ep) if path
                         else inclusion_probs(label, 256, 8, seed=0))
                table = compare(problem, loads, drift=drift, drift_samples=samples).table
                print(f"\nDeepSeek-V3 on h800-sxm, EP {ep}, {phase} ({tokens} tokens/GPU, "
                      f"{kernel} all-to-all), routing {label}")
                print(format_table(table))
                frames.append(table.assign(ep=ep, phase=phase, tokens=tokens, a2a_kernel=kernel,
                                           routing=label))
    cols = ["ep", "phase", "tokens", "a2a_kernel", "routing"]
    out = pd.concat(frames, ignore_index=True)
    return out[cols + [c for c in out.columns if c not in cols]]


def provenance(args, elapsed_s: float) -> dict:
    from moesim import __version__, load_profile
    from moesim.scenarios.metadata import git_commit

    commit, dirty = git_commit()
    hw = load_profile("h800-sxm")
    return {"command": " ".join(["python", sys.argv[0]] + sys.argv[1:]),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": commit, "git_dirty": dirty, "moesim_version": __version__,
            "python": platform.python_version(), "elapsed_s": round(elapsed_s, 2),
            "model": "deepseek-v3",
            "profiles": {"h800-sxm": {"digest": hw.digest(), "kind": hw.kind}},
            "settings": {"routings": list(args.routing), "trace": args.trace,
                         "phases": {p: PHASES[p] for p in args.phase},
                         "ep_redundant": {ep: EP_REDUNDANT[ep] for ep in args.ep},
                         "drift_sigma": args.drift, "drift_samples": args.samples, "seed": 0},
            "note": "predicted by moesim from datasheet profiles; times in seconds per MoE layer"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "placement-deepseek"))
    parser.add_argument("--routing", nargs="*", default=list(ROUTINGS))
    parser.add_argument("--trace", help="per-batch loads / trace for DeepSeek-V3 (FILE.npz@LAYER)")
    parser.add_argument("--phase", nargs="*", default=list(PHASES), choices=list(PHASES))
    parser.add_argument("--ep", nargs="*", type=int, default=list(EP_REDUNDANT),
                        choices=list(EP_REDUNDANT))
    parser.add_argument("--drift", type=float, default=0.3)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    table = run(args.routing, args.trace, args.phase, args.ep, args.drift, args.samples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False)
    meta = provenance(args, time.perf_counter() - start)
    (out / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {out / 'table.csv'} ({len(table)} rows) and metadata.json")


if __name__ == "__main__":
    main()
