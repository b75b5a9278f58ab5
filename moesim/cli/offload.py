"""``moesim offload``: decode tokens/s with experts offloaded to host memory behind a cache."""
from __future__ import annotations

import argparse
import json


def _cache(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an integer or 'auto'") from None


def register(sub) -> None:
    p = sub.add_parser("offload", help="decode tokens/s with experts offloaded to host memory",
                       description="Experts that do not fit in device memory are fetched over the "
                       "host link through a per-layer cache; prints the memory split, hit rate and "
                       "decode tokens/s.")
    p.add_argument("--model", "-m", required=True, help="preset name, model YAML or config.json")
    p.add_argument("--hardware", "-H", required=True, help="profile name or YAML path")
    p.add_argument("--cache-experts", type=_cache, default="auto",
                   help="experts kept on the device, all layers together, or 'auto' (fill memory)")
    p.add_argument("--policy", default="lru", choices=["lru", "popularity"])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--routing", default="uniform", help="routing spec (uniform | zipf:S | ...)")
    src.add_argument("--trace", help="token trace [tokens, top_k] replayed through the caches")
    p.add_argument("--prefetch-accuracy", type=float, default=0.0,
                   help="fraction of next-layer misses a predictor prefetches (0..1)")
    p.add_argument("--weight-dtype", dest="weight_dtype",
                   help="override the weights' dtype (bf16, fp8, fp4 ...)")
    p.add_argument("--batch", type=int, default=1, help="sequences decoded together")
    p.add_argument("--context", type=int, default=4096, help="tokens of KV cache per sequence")
    p.add_argument("--overlap", default="sum", choices=["sum", "max"],
                   help="fetches stall the layer (sum) or overlap its compute (max)")
    p.add_argument("--host-efficiency", type=float, default=None,
                   help="fraction of the host link's peak reached by copies "
                   "(default: the profile's efficiency.host_link_bandwidth)")
    p.add_argument("--reserve-gb", type=float, default=None,
                   help="device memory kept for the runtime "
                   "(default: the profile's memory.reserved_bytes)")
    p.add_argument("--sweep", action="store_true", help="also print tokens/s against cache size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _kwargs(args) -> dict:
    extra = {"weight_dtype": args.weight_dtype} if args.weight_dtype else {}
    return dict(**extra, model=args.model, hardware=args.hardware, batch=args.batch, policy=args.policy,
                routing=args.routing, trace=args.trace, prefetch_accuracy=args.prefetch_accuracy,
                overlap=args.overlap, context=args.context, seed=args.seed,
                host_efficiency=args.host_efficiency,
                reserve_bytes=args.reserve_gb * 1e9 if args.reserve_gb is not None else None)


def run(args: argparse.Namespace) -> int:
    from moesim.offload import predict_offload

    kw = _kwargs(args)
    result = predict_offload(cache_experts=args.cache_experts, **kw)
    if args.json:
        out = {k: v for k, v in result.__dict__.items() if k != "memory"}
        out["memory"] = {**result.memory.__dict__, "auto_cache": result.memory.auto_cache}
        print(json.dumps(out, indent=2, default=float))
        return 0
    print(result)
    print(f"non-expert weights: {result.settings['shape_source']}")
    if args.sweep:
        _sweep(result, kw)
    return 0


def _sweep(result, kw: dict) -> None:
    from moesim.offload import predict_offload

    total, auto = result.memory.total_experts, result.memory.auto_cache
    sizes = sorted({0, total // 8, total // 4, total // 2, auto, 3 * total // 4, total})
    print(f"\n{'cache':>7}{'share':>8}{'hit %':>8}{'fetch/step':>11}{'step ms':>10}{'tokens/s':>10}")
    for size in sizes:
        r = predict_offload(cache_experts=size, **kw)
        mark = " (auto)" if size == auto else (" (over memory)" if size > auto else "")
        print(f"{size:>7}{size / total * 100:>7.1f}%{r.hit_rate * 100:>8.1f}"
              f"{r.fetched_experts_per_step:>11.2f}{r.step_time_s * 1e3:>10.2f}"
              f"{r.tokens_per_s:>10.2f}{mark}")
