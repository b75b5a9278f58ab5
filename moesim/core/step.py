"""One forward step of a whole model on one device: every layer kind, TP/DP/PP, memory.

A step runs ``seqs`` sequences of ``new`` tokens each on every attention rank after ``past``
cached tokens (prefill: ``new = L, past = 0``; decode: ``new = 1, past = C``). Per device,
summed over the layers of one pipeline stage (layers split evenly over ``pp`` stages):

    attention   layers x (projection GEMMs + core + KV append)          (``core.attention``)
    dense_ffn   dense_layers x FFN GEMMs over ffn / tp + activation      (``core.layer.ffn_gemms``)
    moe         moe_layers x the MoE layer's time (``core.layer``, from ``predict_many``)
    norms       per layer 2 norms + 2 residual adds, memory-bound: 10 h act bytes per token
    embed       row gather, ``2 h`` bytes per token;  lm_head  [seqs, h] x [h, vocab / tp]
                plus fp32 logits written and read, and their all-gather over TP
    tp_comm     one all-reduce of ``tokens h`` activations after attention and after each dense
                FFN (``comm.allreduce``); after each MoE layer over its expert-TP group
    pp          ``(pp - 1)`` point-to-point sends of ``tokens h`` activations per step

GEMMs go through ``core.layer.dense_gemm``, the MoE router's dense GEMM (tile/wave quantisation,
the profile's GEMM efficiency), so projections and dense FFNs share the experts' GEMM cost.
Memory-bound kernels cost ``bytes / (bw eff) + kernels x launch_overhead_s``; ``kernels`` per
block is the step's kernel-count table (engine-dependent, see ``moesim.wholemodel``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.core import attention, comm, gemm, layer

KINDS = ("attention", "moe", "dense_ffn", "norms", "embed", "lm_head", "tp_comm", "pp_comm")


@dataclass(frozen=True)
class StepRows:
    """Per-row arrays ``[rows]`` (SI units) for one step on one device; see the module doc."""

    hidden: np.ndarray
    vocab: np.ndarray
    dims: dict  # core.params.head_dims plus q_lora, kv_lora
    mla: np.ndarray  # bool
    full_layers: np.ndarray  # layers (of all stages) attending to the whole context
    window_layers: np.ndarray
    window: np.ndarray
    chunked: np.ndarray  # bool
    moe_layers: np.ndarray
    dense_layers: np.ndarray
    dense_ffn: np.ndarray
    dense_matrices: np.ndarray
    seqs: np.ndarray  # sequences per attention rank in this (micro-)batch
    new: np.ndarray
    past: np.ndarray
    decode: np.ndarray  # bool
    mla_expand: np.ndarray  # bool: MLA decode re-expands the cached latent (not absorbed)
    tp: np.ndarray
    moe_tp: np.ndarray
    pp: np.ndarray
    moe_tokens: np.ndarray  # tokens per device entering each MoE layer
    moe_layer_s: np.ndarray  # one MoE layer's time at moe_tokens (predict_many)
    act_bytes: np.ndarray
    kv_bytes: np.ndarray
    dense_weight_bytes: np.ndarray  # per parameter of attention/dense linear layers
    embed_bytes: np.ndarray  # per embedding/LM-head parameter
    peak_dense_flops_per_s: np.ndarray
    peak_attn_flops_per_s: np.ndarray
    dense_eff: object  # tokens -> GEMM efficiency (dense dtype)
    attn_eff: object  # (M, N, K) of core.attention.flash_shape -> efficiency (attention dtype)
    exp_per_s: np.ndarray  # softmax exponentials per second (inf: not charged)
    call_fixed_s: np.ndarray  # per-call fixed cost of a dense GEMM (efficiency.gemm_call)
    kernels: dict  # block -> kernels per block [rows]: attention, norm, embed, lm_head


def _col(x) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1, 1)


def _stream(hw: layer.DeviceParams, nbytes, kernels) -> np.ndarray:
    return gemm.streaming_time(np.asarray(nbytes, float), hw.mem_bytes_per_s, hw.mem_eff,
                               np.asarray(kernels, float), hw.launch_overhead_s)


def _gemm(hw, r: StepRows, tokens, k, n, batch=1.0) -> np.ndarray:
    """A dense GEMM ``[tokens, k] x [k, n]`` (``batch`` of them) per device ``[rows]``."""
    n_all = np.asarray(n, float) * batch
    cost = layer.dense_gemm(hw, tokens, k, n_all, np.asarray(k, float) * n_all * r.dense_weight_bytes,
                        (np.asarray(k, float) + n_all) * r.act_bytes, r.peak_dense_flops_per_s,
                        r.dense_eff, r.call_fixed_s)
    return np.where(n_all > 0, cost.time_s[:, 0], 0.0)


def attention_layer(hw, r: StepRows, window) -> dict[str, np.ndarray]:
    """One attention block's time ``[rows]``: ``proj`` GEMMs, ``core`` and the total.

    core = max(flops / (peak eff(flash_shape)) + exps / exp_per_s, bytes / (bw eff_mem))
    + kernels x launch (``core.attention`` module doc: FlashAttention-2/-3). MLA decode is
    absorbed unless ``mla_expand`` (then it runs in the prefill form after re-expanding the
    cached latent, :func:`core.attention.latent_expansion`)."""
    tokens = r.seqs * r.new
    absorbed = r.decode & ~r.mla_expand  # MLA rows attend in the latent only when absorbed
    proj = sum(_gemm(hw, r, tokens, k, n, b) for k, n, b in
               attention.projection_gemms(r.dims, r.hidden, r.tp, r.mla, absorbed))
    pairs = attention.tiled_pairs(r.new, attention.attended_keys(r.new, r.past, window,
                                                                 r.chunked), r.decode)
    flops = attention.core_flops(r.dims, r.mla, absorbed, r.tp, r.seqs, pairs)
    kv_elems = attention.kv_elements_per_token(r.dims, r.mla, r.tp)
    keys = attention.cached_tokens(r.past + r.new, window)
    kv_read = r.seqs * keys * kv_elems * r.kv_bytes
    proj, kv_read = _expansion(hw, r, proj, kv_read, keys)
    d_qk, d_v = attention.core_dims(r.dims, r.mla, absorbed)
    qo = tokens * r.dims["heads"] / r.tp * (d_qk + d_v) * r.act_bytes
    eff = r.attn_eff(*attention.flash_shape(r.dims, r.mla, absorbed, r.tp, r.seqs, r.new,
                                            pairs))
    exps = attention.softmax_exps(r.dims, r.tp, r.seqs, pairs)
    compute_s = flops / (r.peak_attn_flops_per_s * eff) + exps / r.exp_per_s
    memory_s = (kv_read + qo + tokens * kv_elems * r.kv_bytes) / (hw.mem_bytes_per_s * hw.mem_eff)
    core = np.maximum(compute_s, memory_s) + r.kernels["attention"] * hw.launch_overhead_s
    return {"proj": proj, "core": core, "total": proj + core,
            "core_bound": np.where(compute_s >= memory_s, "compute", "memory")}


def _expansion(hw, r: StepRows, proj, kv_read, keys):
    """(projections, bytes the core reads) with the latent re-expansion of ``mla_expand`` decode
    rows added: ``kv_b`` over the cached tokens, and the expanded K and V written and read."""
    expand = r.mla & r.decode & r.mla_expand
    if not expand.any():
        return proj, kv_read
    rows, expanded = attention.latent_expansion(r.dims, r.tp, r.seqs, keys, r.new)
    kv_b = _gemm(hw, r, np.where(expand, rows, 0.0), r.dims["kv_lora"],
                 r.dims["heads"] / r.tp * (r.dims["nope"] + r.dims["v"]))
    return (proj + np.where(expand, kv_b, 0.0),
            kv_read + np.where(expand, expanded * r.act_bytes, 0.0))


def dense_ffn_layer(hw, r: StepRows, tokens) -> np.ndarray:
    """A dense FFN over ``dense_ffn / tp`` per device, plus its activation kernel."""
    ffn = r.dense_ffn / r.tp
    load = layer.dense_load(tokens, hw.tile_m)
    up, down = layer.ffn_gemms(load, r.hidden, ffn, r.dense_matrices, r.dense_weight_bytes,
                               r.act_bytes, units=hw.units, tile_m=hw.tile_m, tile_n=hw.tile_n,
                               mem_bytes_per_s=hw.mem_bytes_per_s, eff_mem=hw.mem_eff,
                               launch_overhead_s=hw.launch_overhead_s, grouped=True,
                               peak_flops_per_s=r.peak_dense_flops_per_s, eff_gemm=r.dense_eff,
                               call_fixed_s=r.call_fixed_s)
    act = _stream(hw, tokens * r.dense_matrices * ffn * r.act_bytes, r.kernels["activation"])
    return np.where(r.dense_ffn > 0, up.time_s[:, 0] + down.time_s[:, 0] + act, 0.0)


def _link(hw) -> dict:
    return dict(up_bytes_per_s=hw.up_bytes_per_s, up_eff=hw.up_eff, up_latency_s=hw.up_latency_s,
                out_bytes_per_s=hw.out_bytes_per_s, out_eff=hw.out_eff,
                out_latency_s=hw.out_latency_s, launch_overhead_s=hw.launch_overhead_s)


def stage_times(hw: layer.DeviceParams, r: StepRows, domain_size: int) -> dict[str, np.ndarray]:
    """Per-kind time ``[rows]`` of one pipeline stage (layers / pp), see the module doc."""
    tokens = r.seqs * r.new
    full = attention_layer(hw, r, np.zeros_like(r.hidden))
    windowed = attention_layer(hw, r, r.window)
    per_stage = 1.0 / r.pp
    attn = (r.full_layers * full["total"] + r.window_layers * windowed["total"]) * per_stage
    layers = r.full_layers + r.window_layers
    act_bytes = tokens * r.hidden * r.act_bytes
    norms = (layers * _stream(hw, 10.0 * act_bytes, 2.0 * r.kernels["norm"] + 2.0)
             * per_stage + _stream(hw, 2.0 * act_bytes, r.kernels["norm"]))
    link = _link(hw)
    ar = comm.allreduce(act_bytes, r.tp, domain_size, **link)
    moe_ar = comm.allreduce(r.moe_tokens * r.hidden * r.act_bytes, r.moe_tp, domain_size, **link)
    tp_comm = ((layers + r.dense_layers) * ar + r.moe_layers * moe_ar) * per_stage
    embed = _stream(hw, tokens * r.hidden * (r.embed_bytes + r.act_bytes), r.kernels["embed"])
    head = _head(hw, r, domain_size)
    intra = r.pp * r.tp <= domain_size
    p2p = np.where(intra, hw.up_latency_s + act_bytes / (hw.up_bytes_per_s * hw.up_eff),
                   hw.out_latency_s + act_bytes / (hw.out_bytes_per_s * hw.out_eff))
    return {"attention": attn, "attention_core": (r.full_layers * full["core"] + r.window_layers
                                                  * windowed["core"]) * per_stage,
            "moe": r.moe_layers * r.moe_layer_s * per_stage,
            "dense_ffn": r.dense_layers * dense_ffn_layer(hw, r, tokens) * per_stage,
            "norms": norms, "embed": embed, "lm_head": head, "tp_comm": tp_comm,
            "pp_comm": np.where(r.pp > 1, p2p, 0.0), "attention_bound": full["core_bound"]}


def _head(hw, r: StepRows, domain_size: int) -> np.ndarray:
    """LM head on the last position of each sequence: GEMM over vocab / tp, fp32 logits
    written and read by sampling, and their all-gather (half an all-reduce) over TP."""
    vocab_dev = r.vocab / r.tp
    cost = layer.dense_gemm(hw, r.seqs, r.hidden, vocab_dev, r.hidden * vocab_dev * r.embed_bytes,
                        (r.hidden + vocab_dev) * r.act_bytes, r.peak_dense_flops_per_s,
                        r.dense_eff)
    logits = r.seqs * vocab_dev * 4.0
    gather = 0.5 * comm.allreduce(logits * r.tp, r.tp, domain_size, **_link(hw))
    return cost.time_s[:, 0] + _stream(hw, 2.0 * logits, r.kernels["lm_head"]) + gather
