"""Which Hugging Face model to record from: its config dict, weights and tokenizer (no torch).

``--model`` is a model directory (``config.json``, optionally weights and a tokenizer), a
``config.json`` path, or a moesim preset name. A preset carries only the MoE shape, so it becomes
a minimal config of its family (``PRESET_FAMILIES``) and needs ``--tiny``. ``--tiny`` shrinks
everything but the routing (hidden size, FFN and attention sizes, vocabulary, number of layers:
``TINY_MOE_LAYERS`` MoE layers) and keeps the number of experts, top-k, groups and the router's
scoring, so the trace has the real model's shape; the weights are then random.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from moesim.config.errors import ConfigError, unknown

TINY_MOE_LAYERS = 3
TINY_VOCAB = 512
_TINY_SIZES = {"hidden_size": 64, "d_model": 64, "intermediate_size": 64,
               "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64,
               "intermediate_size_mlp": 128, "num_attention_heads": 4, "n_heads": 4,
               "num_key_value_heads": 2, "head_dim": 16, "kv_lora_rank": 32,
               "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
               "vocab_size": TINY_VOCAB}
_DROP = ("quantization_config", "layer_types", "moe_layers", "torch_dtype", "dtype",
         "_name_or_path", "transformers_version", "auto_map")
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")

#: Preset name prefix -> transformers model_type.
PRESET_FAMILIES = {"mixtral": "mixtral", "qwen1.5-moe": "qwen2_moe", "qwen2": "qwen2_moe",
                   "qwen3": "qwen3_moe", "olmoe": "olmoe", "deepseek-v2": "deepseek_v2",
                   "deepseek-v3": "deepseek_v3", "kimi-k2": "deepseek_v3", "gpt-oss": "gpt_oss",
                   "dbrx": "dbrx", "llama4": "llama4_text"}


@dataclass
class ModelSource:
    """A resolved ``--model``: the config dict, and the folder holding weights/tokenizer if any."""

    name: str
    config: dict
    weights_dir: Path | None = None
    tokenizer_dir: Path | None = None

    @property
    def model_type(self) -> str:
        return self.config["model_type"]


def resolve(model: str, *, tiny: bool) -> ModelSource:
    """The config (shrunk with ``tiny``) and local weights/tokenizer of ``model``."""
    path = Path(model)
    if path.is_dir() or path.suffix == ".json":
        folder, file = (path, path / "config.json") if path.is_dir() else (path.parent, path)
        config = _read(file)
        name = str(config.get("_name_or_path") or "").strip().rstrip("/") or (
            folder.name if path.is_dir() else file.stem)
        has_weights = any(any(folder.glob(g)) for g in _WEIGHT_GLOBS)
        has_tokenizer = any((folder / f).exists() for f in _TOKENIZER_FILES)
        source = ModelSource(name, config, folder if has_weights and not tiny else None,
                             folder if has_tokenizer else None)
    else:
        source = ModelSource(model, preset_config(model))
        file = model
    if source.config.get("model_type") == "llama4":
        source.config = {**source.config.get("text_config", {}), "model_type": "llama4_text"}
    if tiny:
        source.config = tiny_config(source.config)
    elif source.weights_dir is None:
        raise ConfigError("no weights (*.safetensors or pytorch_model*.bin) beside the config; "
                          "expected a model folder with weights, or --tiny to record from a "
                          "small randomly initialised model of this shape", file=str(file),
                          field="model")
    return source


def _read(file: Path) -> dict:
    from moesim.config.files import load_json_file

    data = load_json_file(file, field="model")
    if not isinstance(data, dict) or "model_type" not in data:
        raise ConfigError("no 'model_type'; expected a Hugging Face config.json",
                          file=str(file), field="model")
    return data


def preset_config(name: str) -> dict:
    """A minimal config of the preset's family carrying its MoE shape (see ``PRESET_FAMILIES``)."""
    from moesim.config import load_model

    m = load_model(name)
    family = next((t for prefix, t in PRESET_FAMILIES.items() if name.startswith(prefix)), None)
    if family is None:
        raise ConfigError(unknown("preset family of", name, PRESET_FAMILIES)
                          + "; pass the model's config.json instead", field="model")
    layers = m.moe_layers + m.dense_layers
    c = {"model_type": family, "hidden_size": m.hidden, "num_experts_per_tok": m.top_k,
         "num_hidden_layers": layers, "intermediate_size": m.expert_ffn}
    if family in ("qwen2_moe", "qwen3_moe", "olmoe"):
        c.update(num_experts=m.experts, moe_intermediate_size=m.expert_ffn)
        if family == "qwen2_moe":
            c["shared_expert_intermediate_size"] = m.shared_expert_ffn or m.expert_ffn
    elif family.startswith("deepseek"):
        grouped = m.num_groups > 1
        c.update(n_routed_experts=m.experts, moe_intermediate_size=m.expert_ffn,
                 n_shared_experts=m.shared_experts, n_group=m.num_groups,
                 topk_group=m.topk_groups, first_k_dense_replace=m.dense_layers,
                 scoring_func=m.router)
        if family == "deepseek_v2":
            c["topk_method"] = "group_limited_greedy" if grouped else "greedy"
    elif family == "dbrx":
        c = {"model_type": "dbrx", "d_model": m.hidden, "n_layers": layers,
             "ffn_config": {"moe_num_experts": m.experts, "moe_top_k": m.top_k,
                            "ffn_hidden_size": m.expert_ffn}}
    else:  # mixtral, gpt_oss, llama4_text
        c["num_local_experts"] = m.experts
        if family == "llama4_text":
            c["interleave_moe_layer_step"] = max(1, layers // m.moe_layers)
    return c


def tiny_config(config: dict) -> dict:
    """A copy with small sizes, float32 and ``TINY_MOE_LAYERS`` MoE layers (module docstring)."""
    c = copy.deepcopy(config)
    for key in _DROP:
        c.pop(key, None)
    for key, value in _TINY_SIZES.items():
        if c.get(key) is not None:
            c[key] = value
    kind = c["model_type"]
    if kind != "dbrx":
        c.update(num_attention_heads=4, num_key_value_heads=2)
    if kind.startswith("deepseek"):  # multi-head latent attention; q_lora_rank None = no LoRA
        c.update(num_key_value_heads=4, kv_lora_rank=32, qk_nope_head_dim=16,
                 qk_rope_head_dim=8, v_head_dim=16)
        if c.get("q_lora_rank", 0) is not None:
            c["q_lora_rank"] = 32
        dense = min(int(c.get("first_k_dense_replace") or 0), 1)
        c["first_k_dense_replace"] = dense
        c["num_hidden_layers"] = dense + TINY_MOE_LAYERS * int(c.get("moe_layer_freq") or 1)
    elif kind in ("qwen2_moe", "qwen3_moe"):
        c["mlp_only_layers"] = []
        c["num_hidden_layers"] = TINY_MOE_LAYERS * int(c.get("decoder_sparse_step") or 1)
    elif kind == "llama4_text":
        c["num_hidden_layers"] = TINY_MOE_LAYERS * int(c.get("interleave_moe_layer_step") or 1)
    elif kind == "dbrx":
        c.update(d_model=64, n_heads=4, n_layers=TINY_MOE_LAYERS)
        c["attn_config"] = {**c.get("attn_config", {}), "kv_n_heads": 2}
        c["ffn_config"] = {**c.get("ffn_config", {}), "ffn_hidden_size": 64}
    else:
        c["num_hidden_layers"] = TINY_MOE_LAYERS
    c["vocab_size"] = TINY_VOCAB
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = c.get(key)
        if isinstance(value, int):
            c[key] = min(value, TINY_VOCAB - 1)
        elif isinstance(value, list):
            c[key] = [min(v, TINY_VOCAB - 1) for v in value]
    return c
