"""``moesim predict --scope model``: a whole model's TTFT/TPOT, tokens/s, breakdown, memory."""
from __future__ import annotations

import argparse
import json


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("whole model (--scope model)")
    g.add_argument("--scope", choices=["layer", "model"], default="layer",
                   help="one MoE layer (default) or the whole model")
    g.add_argument("--phase", choices=["prefill", "decode"], default="decode")
    g.add_argument("--batch", type=int, help="sequences in flight over all devices")
    g.add_argument("--prompt-len", type=int, dest="prompt_len", help="prefill prompt tokens")
    g.add_argument("--context", type=int, help="decode: tokens already in the KV cache")
    g.add_argument("--tp", type=int, help="tensor parallel size of attention/dense layers")
    g.add_argument("--dp-attn", type=int, dest="dp_attn", help="data-parallel attention ranks")
    g.add_argument("--pp", type=int, help="pipeline stages")
    g.add_argument("--moe-tp", type=int, dest="moe_tp", help="expert tensor parallel size")
    g.add_argument("--kv-dtype", dest="kv_dtype", help="KV-cache dtype (bf16, fp8 ...)")
    g.add_argument("--engine", choices=["fused", "eager"], help="kernel counts per block")
    g.add_argument("--mla-decode", dest="mla_decode", choices=["absorbed", "expand"],
                   help="MLA decode in the latent (serving engines) or re-expanded per step "
                        "(Hugging Face transformers)")


MODEL_KEYS = ("phase", "batch", "prompt_len", "context", "tp", "dp_attn", "pp", "moe_tp",
              "kv_dtype", "engine", "mla_decode", "experts", "top_k", "expert_ffn", "weight_dtype",
              "compute_dtype", "dispatch_dtype", "combine_dtype", "routing", "placement",
              "overlap", "a2a_kernel", "a2a_impl", "seed", "capacity_factor", "drop_tokens")


def run_model(args: argparse.Namespace) -> int:
    from moesim.serving import predict_model

    run = {k: getattr(args, k) for k in MODEL_KEYS if getattr(args, k, None) is not None}
    if args.ep != 1:
        from moesim.config import ConfigError

        raise ConfigError("--scope model derives EP from --tp x --dp-attn / --moe-tp; "
                          "drop --ep", field="ep")
    row = predict_model(args.model, args.hardware, **run)
    if args.json:
        print(json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
                         indent=2, default=str))
    else:
        print(format_model_row(row))
    return 0


def format_model_row(row) -> str:
    """A readable summary: latency, throughput, time per layer kind, memory per device."""
    from moesim.core.step import KINDS

    decode = row["phase"] == "decode"
    head = (f"{row['model']} on {row['hardware']} x{int(row['devices'])} "
            f"(tp {int(row['tp'])}, dp_attn {int(row['dp_attn'])}, pp {int(row['pp'])}, "
            f"ep {int(row['ep'])}), {row['phase']} batch {int(row['batch'])}, "
            + (f"context {int(row['context'])}" if decode else f"prompt {int(row['prompt_len'])}"))
    latency = (f"TPOT {row['tpot_s'] * 1e3:.2f} ms" if decode
               else f"TTFT {row['ttft_s'] * 1e3:.2f} ms")
    lines = [head, f"  {latency}   {row['tokens_per_s']:.0f} tokens/s   "
                   f"{row['tokens_per_s_per_device']:.0f} per device   "
                   f"{row['tokens_per_s_per_node']:.0f} per node   bottleneck {row['bottleneck']}"
                   f" (MoE layer: {row['moe_bottleneck']})", "  time per layer kind:"]
    total = sum(row[f"{k}_s"] for k in KINDS) + row["pp_bubble_s"]
    for k in (*KINDS, "pp_bubble"):
        value = row[f"{k}_s"]
        if value > 0:
            lines.append(f"    {k:<12}{value * 1e3:>10.3f} ms  {100 * value / total:5.1f} %")
    gb = lambda x: f"{x / 1e9:.2f} GB"  # noqa: E731
    lines.append(f"  memory per device: weights {gb(row['weights_bytes_per_device'])} + KV "
                 f"{gb(row['kv_cache_bytes_per_device'])} + workspace "
                 f"{gb(row['workspace_bytes_per_device'])} = {gb(row['memory_bytes_per_device'])}"
                 f" of {gb(row['memory_capacity_bytes'])} usable: "
                 f"{'fits' if row['fits_in_memory'] else 'DOES NOT FIT'}; max batch "
                 f"{int(row['max_batch'])}")
    lines.append(f"  parameters: {row['total_params'] / 1e9:.1f}B total, "
                 f"{row['active_params'] / 1e9:.1f}B active")
    return "\n".join(lines)
