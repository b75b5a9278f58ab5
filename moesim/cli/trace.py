"""``moesim trace record`` and ``moesim trace stats``: capture and summarise routing traces."""
from __future__ import annotations

import argparse
import json
import math


def register(sub) -> None:
    p = sub.add_parser("trace", help="record a routing trace from a transformers model, or "
                                     "summarise one")
    tsub = p.add_subparsers(dest="trace_command", required=True)
    r = tsub.add_parser("record", help="capture per-layer expert choices through router hooks")
    r.add_argument("--model", "-m", required=True,
                   help="model folder, Hugging Face config.json, or moesim preset (with --tiny)")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="text file, one prompt per line (token ids if the model "
                                       "has no tokenizer)")
    src.add_argument("--random-tokens", dest="random_tokens", type=int,
                     help="this many uniformly random token ids")
    r.add_argument("--seq-len", dest="seq_len", type=int, default=128,
                   help="sequence length for --random-tokens (default 128)")
    r.add_argument("--layers", help="decoder-layer indices to record, e.g. '0,2,5-7' "
                                    "(default: every MoE layer)")
    r.add_argument("--out", "-o", required=True, help="output trace (.npz)")
    r.add_argument("--seed", type=int, default=0, help="seed of random weights and tokens")
    r.add_argument("--tiny", action="store_true",
                   help="small random model of the same routing shape (no weights needed)")
    r.set_defaults(func=run_record)
    s = tsub.add_parser("stats", help="load imbalance, popularity fits, co-activation, drift")
    s.add_argument("trace", help="trace file (.npz)")
    s.add_argument("--ep", type=int, help="EP size for per-rank loads (default: the largest "
                                          "divisor of the expert count <= 8)")
    s.add_argument("--batch-tokens", dest="batch_tokens", type=int, default=256,
                   help="tokens per batch for drift and per-rank loads (default 256)")
    s.add_argument("--layers", help="layers to summarise (default all)")
    s.add_argument("--pairs", type=int, default=5, help="top co-activated pairs to list")
    s.add_argument("--matrix", action="store_true",
                   help="with --json: include the co-activation lift matrix")
    s.add_argument("--json", action="store_true", help="print a JSON object")
    s.set_defaults(func=run_stats)


def run_record(args: argparse.Namespace) -> int:
    from moesim.traces.record import record

    if args.out and not str(args.out).endswith(".npz"):
        from moesim.config import ConfigError

        raise ConfigError(f"output '{args.out}' must end in .npz", field="out")
    path = record(args.model, args.out, prompts=args.prompts, random_tokens=args.random_tokens,
                  seq_len=args.seq_len, layers=args.layers, seed=args.seed, tiny=args.tiny)
    from moesim.traces.io import read_trace

    trace = read_trace(path)
    capture = sorted(set(trace.metadata.get("capture", {}).values()))
    print(f"wrote {path}: {trace.num_tokens} tokens x {len(trace.layers)} layers "
          f"{trace.layers}, {trace.num_experts} experts, top-{trace.num_topk} "
          f"(router {'/'.join(capture)})")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from moesim.traces.io import read_trace
    from moesim.traces.record import parse_layers
    from moesim.traces.stats import trace_stats

    trace = read_trace(args.trace)
    stats = trace_stats(trace, ep=args.ep, batch_tokens=args.batch_tokens, pairs=args.pairs,
                        matrix=args.matrix and args.json, layers=parse_layers(args.layers))
    if args.json:
        print(json.dumps(_finite(stats)))
        return 0
    print(_text(args.trace, trace.metadata, stats))
    return 0


def _finite(value):
    """NaN/inf -> None, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _text(path: str, meta: dict, stats: dict) -> str:
    layers = stats["layers"]
    first = next(iter(layers.values()))
    ep, batch = first["rank_loads"]["ep"], first["drift"]["batch_tokens"]
    lines = [(f"{path}: {meta.get('model', '?')} ({meta.get('model_type', '?')}), "
              f"{stats['num_tokens']} tokens, {stats['num_experts']} experts, "
              f"top-{stats['num_topk']}, layers {','.join(layers)}"),
             (f"{'layer':>5}{'imbal':>7}{'gini':>7}{'zipf_s':>8}{'lgn_sig':>8}"
              f"{'rank_sig':>9}{'rank_imb':>9}{'tv_mean':>8}{'tv_max':>8}{'floor':>7}"
              f"{'excess':>7}{'rho':>6}   (EP {ep}, batches of {batch} tokens)")]
    for layer, s in layers.items():
        r, d = s["rank_loads"], s["drift"]
        lines.append(f"{layer:>5}{s['imbalance']:>7.2f}{s['gini']:>7.3f}{s['zipf_exponent']:>8.3f}"
                     f"{s['lognormal_sigma']:>8.3f}{r.get('sigma', math.nan):>9.3f}"
                     f"{r.get('imbalance_mean', math.nan):>9.2f}{d['tv_mean']:>8.3f}"
                     f"{d['tv_max']:>8.3f}{d['tv_noise_floor']:>7.3f}{d['tv_excess']:>7.2f}"
                     f"{d['spearman_mean']:>6.2f}")
    lines.append("top co-activated pairs (tokens, lift = tokens / chance):")
    for layer, s in layers.items():
        pairs = ", ".join(f"{a}+{b} ({p['tokens']}, {p['lift']:.2f}x)"
                          for p in s["top_pairs"] for a, b in [p["experts"]])
        lines.append(f"  layer {layer}: {pairs or '-'}")
    lines.append("routing specs with this skew: " + "; ".join(
        f"layer {layer}: {' '.join(s['suggested_routing'])}" for layer, s in layers.items()))
    return "\n".join(lines)
