"""``moesim profiles`` and ``moesim models``: what is available, with key numbers."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("profiles", help="list hardware profiles")
    p.set_defaults(func=list_profiles)
    m = sub.add_parser("models", help="list MoE model presets")
    m.set_defaults(func=list_models)


def list_profiles(args) -> int:
    from moesim.config import available_profiles, load_profile

    print(f"{'profile':<22}{'kind':<11}{'bf16 TF/s':>10}{'fp8 TF/s':>10}{'mem GB':>8}"
          f"{'mem TB/s':>9}{'up GB/s':>9}{'domain':>7}{'net GB/s':>9}")
    for name in available_profiles():
        hw = load_profile(name)
        peaks = hw.compute.peak_flops_per_s
        bf16 = peaks.get("bf16", peaks.get("fp32", 0)) / 1e12
        fp8 = peaks.get("fp8", 0) / 1e12
        print(f"{name:<22}{hw.kind:<11}{bf16:>10.1f}{fp8 or float('nan'):>10.1f}"
              f"{hw.memory.capacity_bytes / 1e9:>8.0f}{hw.memory.bandwidth_bytes_per_s / 1e12:>9.2f}"
              f"{hw.scale_up.bandwidth_bytes_per_s / 1e9:>9.0f}{hw.scale_up.domain_size:>7}"
              f"{hw.scale_out.bandwidth_bytes_per_s / 1e9:>9.1f}")
    return 0


def list_models(args) -> int:
    """One line per preset; total and active parameters computed from the architecture fields
    (``moesim.core.params``; active counts the input embedding)."""
    from moesim.config import available_models, load_model

    print(f"{'model':<18}{'hidden':>7}{'ffn':>7}{'experts':>8}{'top_k':>6}{'shared':>7}"
          f"{'groups':>7}{'layers':>8}{'attn':>5}{'vocab':>8}{'dtype':>6}{'total':>9}"
          f"{'active':>9}")
    from moesim.wholemodel import param_counts

    for name in available_models():
        m = load_model(name)
        groups = f"{m.topk_groups}/{m.num_groups}" if m.num_groups > 1 else "-"
        counts = param_counts(m) if m.vocab and m.heads else None
        total, active = (f"{counts[0] / 1e9:.1f}B", f"{counts[1] / 1e9:.1f}B") if counts \
            else ("?", "?")
        print(f"{name:<18}{m.hidden:>7}{m.expert_ffn:>7}{m.experts:>8}{m.top_k:>6}"
              f"{m.shared_experts:>7}{groups:>7}{m.moe_layers:>5}+{m.dense_layers:<2}"
              f"{m.attention_kind or '?':>5}{m.vocab:>8}{m.weight_dtype:>6}{total:>9}{active:>9}")
    return 0
