"""``moesim place``: search expert placements, print the comparison table, write the best one."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("place", help="search expert placement/replication; write a placement file",
                       description="Compare placement strategies with moesim.predict and write the "
                       "fastest placement as a file that 'moesim predict --placement FILE' reads.")
    p.add_argument("--model", "-m", required=True, help="preset name, model YAML or config.json")
    p.add_argument("--hardware", "-H", required=True, help="profile name or YAML path")
    p.add_argument("--ep", type=int, required=True, help="expert-parallel size (devices)")
    p.add_argument("--tokens", "-t", type=int, required=True,
                   help="tokens per device entering the layer")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--routing", default="uniform",
                     help="routing spec (uniform | zipf:S | probs:... | trace:PATH ...)")
    src.add_argument("--trace", help="per-batch loads (.npz with 'loads', FILE.npz@LAYER) or a "
                     "token trace [tokens, top_k]; fit on the first batch, drift = the next ones")
    p.add_argument("--redundant", type=int, default=0, help="redundant expert slots (budget)")
    p.add_argument("--strategy", default="all",
                   help="'all', or comma-separated names (contiguous, round-robin, greedy, "
                   "greedy+ls, eplb, eplb+ls) or module:function")
    p.add_argument("--out", help="placement file to write (.yaml or .json)")
    p.add_argument("--current", help="deployed placement file that moves are counted from "
                   "(default contiguous)")
    p.add_argument("--overlap", default="none", choices=["none", "shared", "two-batch"])
    p.add_argument("--a2a-kernel", dest="a2a_kernel", default="per-expert",
                   choices=["per-expert", "per-device", "hierarchical", "padded"])
    p.add_argument("--a2a-impl", dest="a2a_impl", default="link",
                   help="dispatch/combine cost law: link or a calibrated profile's kernel family")
    p.add_argument("--drift", type=float, default=0.3,
                   help="log-normal sigma of the routing drift applied to q (no trace)")
    p.add_argument("--drift-samples", type=int, default=3)
    p.add_argument("--batch-tokens", type=int,
                   help="tokens per batch when cutting a token trace (default tokens x ep)")
    p.add_argument("--horizon", type=int, default=4, help="later trace batches to evaluate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", help="also write the comparison table as CSV")
    p.set_defaults(func=run)


def _loads(args, model):
    if args.trace:
        from moesim.placement_search.traces import load_batch_loads

        return load_batch_loads(args.trace, model.experts, args.batch_tokens or args.tokens * args.ep)
    from moesim.inputs import inclusion_probs

    return inclusion_probs(args.routing, model.experts, model.top_k, args.seed)


def run(args: argparse.Namespace) -> int:
    from moesim import __version__
    from moesim.placement_search.comparison import BUILTIN, compare, format_table, make_problem
    from moesim.placement_search.files import read_placement, write_placement

    problem = make_problem(args.model, args.hardware, args.tokens, args.ep, args.redundant,
                           overlap=args.overlap, a2a_kernel=args.a2a_kernel,
                           a2a_impl=args.a2a_impl)
    model = problem.model
    names = BUILTIN if args.strategy == "all" else [s.strip() for s in args.strategy.split(",")]
    current = read_placement(args.current, model.experts)[0] if args.current else None
    result = compare(problem, _loads(args, model), names, current=current, drift=args.drift,
                     drift_samples=args.drift_samples, horizon=args.horizon, seed=args.seed)
    table = result.table
    source = f"trace {args.trace}" if args.trace else f"routing {args.routing}"
    print(f"{model.name} on {args.hardware}: ep={args.ep} tokens/device={args.tokens} {source} "
          f"redundant<={args.redundant} a2a={args.a2a_kernel} overlap={args.overlap}")
    print(format_table(table))
    print("speedup: contiguous time / time; move: from the current placement (per layer); "
          "stale/fresh: mean time under drifted routing of this placement / of a re-run")
    key = result.best(None if args.strategy == "all" else names)
    best = table[(table["strategy"] == key[0]) & (table["redundant"] == key[1])].iloc[0]
    print(f"best: {key[0]} with {key[1]} redundant slots, {best['time_s'] * 1e6:.1f} us "
          f"(x{best['speedup']:.2f} vs contiguous), load imbalance {best['load_imbalance']:.2f}")
    if args.csv:
        table.to_csv(args.csv, index=False)
    if args.out:
        meta = {"strategy": key[0], "redundant_slots": key[1],
                "predicted_time_s": float(best["time_s"]),
                "load_imbalance": float(best["load_imbalance"]),
                "speedup_vs_contiguous": float(best["speedup"]), "model": model.name,
                "hardware": args.hardware, "ep": args.ep, "tokens": args.tokens,
                "routing": args.routing if not args.trace else f"trace {args.trace}",
                "a2a_kernel": args.a2a_kernel, "a2a_impl": args.a2a_impl,
                "overlap": args.overlap,
                "moesim_version": __version__}
        path = write_placement(args.out, result.placements[key], meta)
        print(f"wrote {path} (use: moesim predict ... --ep {args.ep} --placement {path})")
    return 0
