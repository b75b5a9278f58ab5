"""Parameter counts of a whole model from its architecture fields, vectorised over rows.

Every function takes a mapping ``field -> array [rows]`` (``moesim.config.arch.model_columns``
or a ``predict_many`` frame's columns) and returns arrays ``[rows]``. Counts follow the
``transformers`` modelling code of each family; biases and rotary tables are not counted.

Attention per layer (``h`` hidden, ``H`` heads, ``G`` KV heads, ``d`` head dim):

    GQA/MHA/MQA:  q h*H*d + k, v 2*h*G*d + o H*d*h
    MLA:          q  h*r_q + r_q + r_q*H*(d + d_rope)   (r_q = q_lora_rank; r_q = 0: h*H*(d+d_rope))
                  kv h*(r_kv + d_rope) + r_kv + r_kv*H*(d + d_v) ;  o H*d_v*h
                  (the ``+ r`` terms are the q_a/kv_a RMSNorm weights)

A decoder layer adds two RMSNorm/LayerNorm weight vectors (2 h); the final norm adds h; the
embedding is ``vocab * h`` and the LM head another ``vocab * h`` unless tied. A dense FFN has
``(3 if gated else 2) * h * dense_ffn``; an MoE layer is ``MoEModel.moe_layer_params``
(routed + shared experts + router ``h * experts``); one token uses ``top_k`` routed experts.
"""
from __future__ import annotations

import numpy as np


def _f(cols, name) -> np.ndarray:
    return np.asarray(cols[name], dtype=float)


def head_dims(cols) -> dict[str, np.ndarray]:
    """Resolved head dims ``[rows]``: heads, kv_heads, qk (incl. rope), v, nope; 0 defaults."""
    heads, hidden = _f(cols, "heads"), _f(cols, "hidden")
    kv = _f(cols, "kv_heads")
    kv = np.where(kv > 0, kv, heads)
    d = _f(cols, "head_dim")
    d = np.where(d > 0, d, hidden / np.maximum(heads, 1.0))
    rope = np.where(_f(cols, "kv_lora_rank") > 0, _f(cols, "qk_rope_head_dim"), 0.0)
    v = _f(cols, "v_head_dim")
    return {"heads": heads, "kv_heads": kv, "qk": d + rope, "v": np.where(v > 0, v, d),
            "nope": d, "rope": rope}


def attention_params(cols) -> np.ndarray:
    """Projection weights of one self-attention block ``[rows]`` (module docstring)."""
    h = _f(cols, "hidden")
    dims = head_dims(cols)
    heads, qk, v = dims["heads"], dims["qk"], dims["v"]
    r_q, r_kv = _f(cols, "q_lora_rank"), _f(cols, "kv_lora_rank")
    gqa = h * heads * dims["nope"] + 2.0 * h * dims["kv_heads"] * dims["nope"] + heads * v * h
    q = np.where(r_q > 0, h * r_q + r_q + r_q * heads * qk, h * heads * qk)
    kv = h * (r_kv + dims["rope"]) + r_kv + r_kv * heads * (dims["nope"] + v)
    mla = q + kv + heads * v * h
    return np.where(r_kv > 0, mla, gqa)


def ffn_params(hidden, ffn, gated) -> np.ndarray:
    return np.where(np.asarray(gated, dtype=bool), 3.0, 2.0) * np.asarray(hidden, float) * ffn


def dense_gated(cols) -> np.ndarray:
    """The dense FFN's gating: ``dense_gated`` where given, else the experts' ``gated``."""
    given = np.asarray(cols["dense_gated"], dtype=object)
    return np.array([g if g is not None else e for g, e in zip(given, cols["gated"])], dtype=bool)


def moe_layer_params(cols) -> dict[str, np.ndarray]:
    """One MoE layer ``[rows]``: ``total`` (all experts + router) and ``active`` (top_k)."""
    h = _f(cols, "hidden")
    expert = ffn_params(h, _f(cols, "expert_ffn"), cols["gated"])
    shared = _f(cols, "shared_experts") * ffn_params(h, _f(cols, "shared_expert_ffn"), cols["gated"])
    router = h * _f(cols, "experts")
    return {"total": _f(cols, "experts") * expert + shared + router,
            "active": _f(cols, "top_k") * expert + shared + router,
            "routed_expert": expert, "shared": shared, "router": router}


def model_params(cols) -> dict[str, np.ndarray]:
    """Whole-model counts ``[rows]``: total, active, and the parts (embedding, lm_head,
    attention, dense_ffn, moe, moe_active, norms) summing to them; ``input_only``: the
    embedding when only the lookup uses it (untied), else 0."""
    h = _f(cols, "hidden")
    moe_n, dense_n = _f(cols, "moe_layers"), _f(cols, "dense_layers")
    cross = _f(cols, "cross_attention_layers")
    attn = attention_params(cols) * (moe_n + dense_n + cross)
    dense = ffn_params(h, _f(cols, "dense_ffn"), dense_gated(cols)) * dense_n
    moe = moe_layer_params(cols)
    embedding = _f(cols, "vocab") * h
    lm_head = np.where(np.asarray(cols["tie_embeddings"], dtype=bool), 0.0, embedding)
    norms = h * (2.0 * (moe_n + dense_n) + cross + 1.0)
    shared_parts = attn + dense + embedding + lm_head + norms
    return {"total": shared_parts + moe["total"] * moe_n,
            "active": shared_parts + moe["active"] * moe_n,
            "embedding": embedding, "lm_head": lm_head, "input_only": np.where(lm_head > 0,
                                                                               embedding, 0.0), "attention": attn, "dense_ffn": dense,
            "moe": moe["total"] * moe_n, "moe_active": moe["active"] * moe_n, "norms": norms}
