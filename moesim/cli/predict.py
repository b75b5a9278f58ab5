"""``moesim predict``: one config, a breakdown table or JSON."""
from __future__ import annotations

import argparse


def _routing(text: str) -> str:
    from moesim.config.specs import parse_routing

    parse_routing(text)
    return text


def add_config_args(p: argparse.ArgumentParser, *, multi_hardware: bool = False,
                    tokens_required: bool = True) -> None:
    """Arguments shared by predict and compare: model, hardware and overrides."""
    p.add_argument("--model", "-m", required=True, help="preset name, model YAML or config.json")
    if multi_hardware:
        p.add_argument("--hardware", required=True,
                       help="comma-separated profile names or paths")
    else:
        p.add_argument("--hardware", "-H", required=True, help="profile name or YAML path")
    p.add_argument("--tokens", "-t", type=int, required=tokens_required,
                   help="tokens per device entering the layer")
    p.add_argument("--ep", type=int, default=1, help="expert-parallel size (devices)")
    p.add_argument("--experts", type=int, help="override routed experts")
    p.add_argument("--top-k", type=int, dest="top_k", help="override top-k")
    p.add_argument("--expert-ffn", type=int, dest="expert_ffn", help="override expert FFN size")
    p.add_argument("--weight-dtype", dest="weight_dtype", help="fp32, bf16, fp16, fp8, fp4 ...")
    p.add_argument("--compute-dtype", dest="compute_dtype", help="GEMM dtype if not the weights'")
    p.add_argument("--dispatch-dtype", dest="dispatch_dtype")
    p.add_argument("--combine-dtype", dest="combine_dtype")
    p.add_argument("--routing", default="uniform", help="uniform | zipf:S | lognormal:SIGMA | probs:... | trace:PATH[.npz[@LAYER]]")
    p.add_argument("--placement", default="contiguous",
                   help="contiguous | round-robin | balanced | replicated:R | FILE")
    p.add_argument("--overlap", default="none", choices=["none", "shared", "two-batch"])
    p.add_argument("--a2a-kernel", dest="a2a_kernel", default="per-expert",
                   choices=["per-expert", "all-to-all-v", "per-device", "hierarchical", "padded"])
    p.add_argument("--a2a-impl", dest="a2a_impl", default="link",
                   help="dispatch/combine cost law: link (the profile's links) or a kernel family "
                        "of a calibrated profile (deepep_normal, deepep_ll, nccl)")
    p.add_argument("--capacity-factor", type=float, dest="capacity_factor",
                   help="expert capacity as a multiple of the mean load (padded buffers, dropping)")
    p.add_argument("--drop-tokens", action="store_true", default=None, dest="drop_tokens",
                   help="drop assignments beyond expert capacity (default: dropless)")
    p.add_argument("--seed", type=int, default=0)


OVERRIDE_KEYS = ("experts", "top_k", "expert_ffn", "weight_dtype", "compute_dtype",
                 "dispatch_dtype", "combine_dtype", "routing", "placement", "overlap",
                 "a2a_kernel", "a2a_impl", "seed", "ep", "capacity_factor", "drop_tokens")


def overrides_from(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in OVERRIDE_KEYS if getattr(args, k, None) is not None}


def register(sub) -> None:
    from moesim.cli.predict_model import add_model_args

    p = sub.add_parser("predict", help="predict one MoE layer's time (or, with --scope model, "
                                       "a whole model's TTFT/TPOT) and its breakdown")
    add_config_args(p, tokens_required=False)
    add_model_args(p)
    p.add_argument("--mode", default="expected", choices=["expected", "montecarlo"])
    p.add_argument("--samples", type=int, default=200, help="Monte Carlo samples")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim import predict

    if args.scope == "model":
        from moesim.cli.predict_model import run_model

        return run_model(args)
    if args.tokens is None:
        from moesim.config import ConfigError

        raise ConfigError("--tokens is required for --scope layer", field="tokens")
    result = predict(args.model, args.hardware, args.tokens, mode=args.mode,
                     samples=args.samples, **overrides_from(args))
    print(result.to_json() if args.json else result)
    return 0
