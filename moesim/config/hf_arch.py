"""Architecture fields (``moesim.config.arch``) from a Hugging Face ``config.json``.

Per family, following its ``transformers`` configuration and modelling code:

* heads: ``num_attention_heads`` / ``num_key_value_heads`` / ``head_dim`` (DBRX: ``n_heads``,
  ``attn_config.kv_n_heads``); vocabulary ``vocab_size``; ``tie_word_embeddings`` (absent:
  false, the default of every MoE config class read here).
* DeepSeek-V2/V3, Kimi K2 (MLA): ``q_lora_rank`` (null: full-rank queries), ``kv_lora_rank``,
  ``qk_rope_head_dim``, ``qk_nope_head_dim`` (-> ``head_dim``), ``v_head_dim``; dense layers
  use ``intermediate_size``.
* Mixtral: ``sliding_window`` on every layer when set. Qwen2/3-MoE: a window only with
  ``use_sliding_window``, on layers ``i >= max_window_layers``; ``mlp_only_layers`` use
  ``intermediate_size``.
* gpt-oss: ``sliding_window`` on the layers ``layer_types`` marks ``sliding_attention``
  (absent: even-indexed layers, the config class default).
* Llama 4: chunked attention of ``attention_chunk_size`` on the RoPE layers (``no_rope_layers``
  entry 1; absent: every layer but each 4th); dense layers use ``intermediate_size_mlp``.
"""
from __future__ import annotations


def _common(c, heads_key="num_attention_heads", kv_key="num_key_value_heads") -> dict:
    return {"vocab": c.optional("vocab_size", 0, "the vocabulary size"),
            "heads": c.optional(heads_key, 0, "the number of query heads"),
            "kv_heads": c.optional(kv_key, 0, "the number of key/value heads"),
            "head_dim": c.optional("head_dim", 0, "the attention head dim"),
            "tie_embeddings": bool(c.get("tie_word_embeddings", False))}


def _layers(c) -> int:
    return c.optional("num_hidden_layers", 0, "the number of decoder layers")


def _window(c, layers_with_window: int) -> dict:
    window = c.optional("sliding_window", 0, "the attention window in tokens")
    return {"sliding_window": window, "window_layers": layers_with_window if window else 0}


def _mixtral(c, fields: dict) -> dict:
    return {**_common(c), **_window(c, _layers(c))}


def _qwen(c, fields: dict) -> dict:
    out = _common(c)
    if c.get("use_sliding_window", False):
        first = c.optional("max_window_layers", 0, "the first layer with a window")
        out.update(_window(c, max(_layers(c) - first, 0)))
    if fields["dense_layers"]:
        out["dense_ffn"] = c.optional("intermediate_size", 0, "the dense MLP width")
    return out


def _gpt_oss(c, fields: dict) -> dict:
    types = c.get("layer_types")
    layers = _layers(c)
    sliding = (sum(1 for t in types if t == "sliding_attention") if isinstance(types, list)
               else (layers + 1) // 2)
    return {**_common(c), **_window(c, sliding)}


def _deepseek(c, fields: dict) -> dict:
    out = _common(c)
    out.update(q_lora_rank=c.optional("q_lora_rank", 0, "the query low-rank dim"),
               kv_lora_rank=c.optional("kv_lora_rank", 0, "the key/value latent dim"),
               qk_rope_head_dim=c.optional("qk_rope_head_dim", 0, "the rotary head dim"),
               head_dim=c.optional("qk_nope_head_dim", 0, "the no-rope head dim"),
               v_head_dim=c.optional("v_head_dim", 0, "the value head dim"))
    if fields["dense_layers"]:
        out["dense_ffn"] = c.optional("intermediate_size", 0, "the dense MLP width")
    return out


def _dbrx(c, fields: dict) -> dict:
    attn = c.nested("attn_config", "the attention settings (kv_n_heads)")
    out = _common(c, heads_key="n_heads")
    out["kv_heads"] = attn.optional("kv_n_heads", 0, "the number of key/value heads")
    return out


def _llama4(c, fields: dict) -> dict:
    text = c.nested("text_config", "the language model settings") if c.get("text_config") else c
    out = _common(text)
    layers = _layers(text)
    rope = text.int_list("no_rope_layers", "1 for layers with RoPE (chunked), 0 for NoPE")
    chunked = sum(rope) if rope else sum(1 for i in range(layers) if (i + 1) % 4)
    chunk = text.optional("attention_chunk_size", 0, "the attention chunk in tokens")
    out.update(sliding_window=chunk, window_kind="chunked", window_layers=chunked if chunk else 0)
    if fields["dense_layers"]:
        out["dense_ffn"] = text.optional("intermediate_size_mlp", 0, "the dense MLP width")
    return out


READERS = {"mixtral": _mixtral, "olmoe": _mixtral, "gpt_oss": _gpt_oss,
           "qwen2_moe": _qwen, "qwen3_moe": _qwen,
           "deepseek_v2": _deepseek, "deepseek_v3": _deepseek, "kimi_k2": _deepseek,
           "dbrx": _dbrx, "llama4": _llama4, "llama4_text": _llama4}


def arch_fields(c, model_type: str, fields: dict) -> dict:
    """The architecture fields of config ``c`` (a ``hf._Json``); ``fields``: the MoE fields
    already read (layer counts)."""
    return READERS[model_type](c, fields)
