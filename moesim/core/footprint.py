"""Memory per device of a whole model being served: weights, KV cache, activation workspace.

Per device of one pipeline stage (layers split evenly over ``pp``; ``t`` attention/dense TP):

    weights   = layers/pp x (attention / t x b_dense + 2 h b_act)       (MLA latent projections
                are counted split too; they are < 8 % of DeepSeek-V3's attention)
              + dense_layers/pp x dense FFN / t x b_dense
              + MoE weights per device / pp    (experts on this EP rank, shared experts, router)
              + embedding and LM head: vocab h / t x b_embed each (both on a one-stage device,
                the larger one where stages split them; once when tied)
    kv_cache  = seqs x kv_elements(layer) x b_kv x (full_layers x context
                + window_layers x min(context, W)) / pp
    workspace = tokens x (4 h + attention q/k/v/o width / t + m ffn / t) x b_act
                + seqs x vocab / t x 4    (one layer's activations live at a time: the residual,
                its norm, the projections; flash attention keeps scores on chip; fp32 logits)

``usable = capacity x memory_utilization`` (what the serving engine may allocate; vLLM's
``gpu_memory_utilization`` default is 0.9); ``max_seqs`` per attention rank is how many
sequences of this context fit beside the weights.
"""
from __future__ import annotations

import numpy as np

from moesim.core import attention


def weights_bytes(attn_params, dense_ffn_params, moe_bytes, vocab, hidden, layers, dense_layers,
                  tp, pp, tied, dense_b, act_b, embed_b) -> np.ndarray:
    """Weight bytes on one device ``[rows]`` (module docstring)."""
    per_layer = attn_params / tp * dense_b + 2.0 * hidden * act_b
    table = vocab * hidden / tp * embed_b
    tables = np.where(tied, table, np.where(pp > 1, table, 2.0 * table))
    return (layers * per_layer + dense_layers * dense_ffn_params / tp * dense_b + moe_bytes) / pp \
        + tables


def kv_bytes_per_seq(dims, mla, tp, kv_b, context, full_layers, window_layers, window,
                     pp) -> np.ndarray:
    """KV-cache bytes of one sequence at ``context`` tokens on one device ``[rows]``."""
    elems = attention.kv_elements_per_token(dims, mla, tp)
    tokens = full_layers * context + window_layers * attention.cached_tokens(context, window)
    return elems * kv_b * tokens / pp


def workspace_bytes(tokens, seqs, hidden, dims, ffn_width, vocab, tp, act_b) -> np.ndarray:
    """Activation workspace of one layer at a time plus the fp32 logits ``[rows]``."""
    attn_width = dims["heads"] / tp * (dims["nope"] + dims["rope"] + dims["v"]) \
        + 2.0 * np.ceil(dims["kv_heads"] / tp) * dims["nope"]
    return tokens * (4.0 * hidden + attn_width + ffn_width / tp) * act_b \
        + seqs * vocab / tp * 4.0


def max_seqs(usable, weights, per_seq) -> np.ndarray:
    """Sequences per attention rank that fit: ``floor((usable - weights) / per_seq)`` >= 0."""
    return np.maximum(np.floor((usable - weights) / np.maximum(per_seq, 1e-30)), 0.0)
