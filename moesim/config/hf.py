"""Read a Hugging Face ``config.json`` into a :class:`MoEModel`; nothing is downloaded.

Each model family stores its MoE shape under its own keys. One small reader per family maps
them onto moesim's fields; the family is chosen by ``model_type`` (then ``architectures``).
Which layers are MoE follows the family's modelling code in ``transformers``:

* Mixtral, OLMoE, gpt-oss, DBRX: every decoder layer.
* Qwen2-MoE / Qwen3-MoE: layer ``i`` unless ``i in mlp_only_layers`` or
  ``(i + 1) % decoder_sparse_step != 0``.
* DeepSeek-V2/V3 (and Kimi K2): layer ``i`` if ``i >= first_k_dense_replace`` and
  ``i % moe_layer_freq == 0``.
* Llama 4: ``text_config.moe_layers``, else ``range(step - 1, num_hidden_layers, step)`` with
  ``step = interleave_moe_layer_step``.

Dtypes (:mod:`moesim.config.dtypes`) from ``quantization_config``:

* ``fp8`` with ``weight_block_size [128, 128]`` (DeepSeek-V3, Kimi K2, Qwen3 FP8): block-scaled
  ``fp8`` weights; GEMM inputs are FP8 too, so tokens are dispatched in FP8 (1x128 scales).
  ``fp8`` without a block size: per-tensor ``fp8-tensor``.
* ``mxfp4`` (gpt-oss): ``mxfp4`` weights computed in BF16 (transformers/vLLM dequantise on
  GPUs without FP4 tensor cores), BF16 activations.
* ``gptq`` / ``awq`` (``bits`` 4 or 8, ``group_size``): weight-only ``int4-g<group_size>``
  (``int4`` for ``group_size -1``) or ``int8``, computed in the activation dtype (w4a16).
* ``modelopt`` (NVIDIA TensorRT Model Optimizer exports) with ``quant_algo`` ``NVFP4``:
  ``nvfp4`` weights and FP4 GEMMs; ``FP8``: ``fp8-tensor``.

Otherwise ``torch_dtype``/``dtype``. Any other quantisation is an error naming what is known.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moesim.config.errors import ConfigError, unknown
from moesim.config.files import load_json_file
from moesim.config.hf_arch import arch_fields
from moesim.config.model import MoEModel, validate_model

_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
_QUANT_METHODS = ("fp8", "mxfp4", "gptq", "awq", "modelopt")


class _Json:
    """A config.json mapping (or a nested part of it) whose errors name the file and key."""

    def __init__(self, data: dict, file: str, prefix: str = ""):
        self.data = data
        self.file = file
        self.prefix = prefix

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, field=f"{self.prefix}{key}")

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    def require(self, key: str, what: str, minimum: int = 1) -> int:
        """A required integer >= ``minimum``; ``what`` says what the key means."""
        if self.data.get(key) is None:
            raise self.error(key, f"missing; expected {what} (an integer >= {minimum})")
        return self.optional(key, None, what, minimum)

    def optional(self, key: str, default: int | None, what: str, minimum: int = 0) -> int:
        """An optional integer >= ``minimum``; absent or null gives ``default``."""
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"expected {what} (an integer >= {minimum}) (got {value!r})")
        return value

    def int_list(self, key: str, what: str) -> list[int] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self.error(key, f"expected {what} (a list of layer indices) (got {value!r})")
        return value

    def choice(self, key: str, default: str, choices: Iterable[str]) -> str:
        value = self.get(key, default)
        if value not in choices:
            raise self.error(key, unknown("value", value, choices))
        return value

    def nested(self, key: str, what: str) -> "_Json":
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self.error(key, f"missing or not a mapping; expected {what}")
        return _Json(value, self.file, f"{self.prefix}{key}.")


def _count(layers: int, is_moe: Callable[[int], bool]) -> dict:
    moe = sum(1 for i in range(layers) if is_moe(i))
    return {"moe_layers": moe, "dense_layers": layers - moe}


def _every(layer: int) -> bool:
    return True


def _top_k(c: _Json) -> int:
    """``num_experts_per_tok``; gpt-oss also writes ``experts_per_token``."""
    what = "the number of experts each token is routed to"
    top_k = c.optional("num_experts_per_tok", None, what, 1)
    alias = c.optional("experts_per_token", None, what, 1)
    if top_k is not None and alias is not None and top_k != alias:
        raise c.error("experts_per_token", f"disagrees with num_experts_per_tok ({top_k}); "
                                           f"expected the same value (got {alias})")
    if top_k is None and alias is None:
        return c.require("num_experts_per_tok", what)
    return top_k if top_k is not None else alias


def _all_moe(c: _Json, experts_key: str) -> dict:
    """Mixtral, OLMoE, gpt-oss: every layer has ``experts_key`` experts of ``intermediate_size``."""
    return {"hidden": c.require("hidden_size", "the model width"),
            "expert_ffn": c.require("intermediate_size", "the intermediate size of one expert"),
            "experts": c.require(experts_key, "the number of routed experts per layer"),
            "top_k": _top_k(c),
            **_count(c.require("num_hidden_layers", "the number of decoder layers"), _every)}


def _qwen(c: _Json, model_type: str) -> dict:
    """Qwen2-MoE: one shared expert of ``shared_expert_intermediate_size``; Qwen3-MoE: none."""
    layers = c.require("num_hidden_layers", "the number of decoder layers")
    step = c.optional("decoder_sparse_step", 1, "the MoE layer period", 1)
    dense = set(c.int_list("mlp_only_layers", "the layers with a dense MLP") or [])
    shared_ffn = 0
    if model_type == "qwen2_moe":
        shared_ffn = c.optional("shared_expert_intermediate_size", 0,
                              "the intermediate size of the shared expert")
    return {"hidden": c.require("hidden_size", "the model width"),
            "expert_ffn": c.require("moe_intermediate_size", "the intermediate size of one expert"),
            "experts": c.require("num_experts", "the number of routed experts per layer"),
            "top_k": _top_k(c),
            "shared_experts": 1 if shared_ffn else 0, "shared_expert_ffn": shared_ffn,
            **_count(layers, lambda i: i not in dense and (i + 1) % step == 0)}


def _deepseek(c: _Json, model_type: str) -> dict:
    """DeepSeek-V2/V3, Kimi K2: ``n_shared_experts`` experts of ``moe_intermediate_size``."""
    layers = c.require("num_hidden_layers", "the number of decoder layers")
    first_dense = c.optional("first_k_dense_replace", 0, "the number of leading dense layers")
    freq = c.optional("moe_layer_freq", 1, "the MoE layer period", 1)
    ffn = c.require("moe_intermediate_size", "the intermediate size of one expert")
    shared = c.optional("n_shared_experts", 0, "the number of shared experts")
    default_router = "softmax" if model_type == "deepseek_v2" else "sigmoid"
    groups = {"num_groups": 1, "topk_groups": 1}
    if c.get("topk_method") != "greedy":  # greedy top-k ignores n_group/topk_group
        groups = {"num_groups": c.optional("n_group", 1, "the number of expert groups", 1),
                  "topk_groups": c.optional("topk_group", 1, "the groups each token may use", 1)}
    return {"hidden": c.require("hidden_size", "the model width"), "expert_ffn": ffn,
            "experts": c.require("n_routed_experts", "the number of routed experts per layer"),
            "top_k": _top_k(c), "shared_experts": shared, "shared_expert_ffn": ffn if shared else 0,
            "router": c.choice("scoring_func", default_router, ("softmax", "sigmoid")), **groups,
            **_count(layers, lambda i: i >= first_dense and i % freq == 0)}


def _dbrx(c: _Json, model_type: str) -> dict:
    """DBRX: GLU experts described in the nested ``ffn_config``."""
    ffn = c.nested("ffn_config", "the MoE settings (ffn_hidden_size, moe_num_experts, moe_top_k)")
    return {"hidden": c.require("d_model", "the model width"),
            "expert_ffn": ffn.require("ffn_hidden_size", "the intermediate size of one expert"),
            "experts": ffn.require("moe_num_experts", "the number of routed experts per layer"),
            "top_k": ffn.require("moe_top_k", "the number of experts each token is routed to"),
            **_count(c.require("n_layers", "the number of decoder layers"), _every)}


def _llama4(c: _Json, model_type: str) -> dict:
    """Llama 4: routed experts and one shared expert, both of ``intermediate_size``; the dense
    layers' ``intermediate_size_mlp`` has no moesim field. The router applies a sigmoid to the
    selected logits."""
    text = c.nested("text_config", "the language model settings") if model_type == "llama4" else c
    layers = text.require("num_hidden_layers", "the number of decoder layers")
    step = text.optional("interleave_moe_layer_step", 1, "the MoE layer period", 1)
    listed = text.int_list("moe_layers", "the MoE layers")
    moe = set(listed) if listed is not None else set(range(step - 1, layers, step))
    ffn = text.require("intermediate_size", "the intermediate size of one expert")
    return {"hidden": text.require("hidden_size", "the model width"), "expert_ffn": ffn,
            "experts": text.require("num_local_experts", "the number of routed experts per layer"),
            "top_k": _top_k(text), "shared_experts": 1, "shared_expert_ffn": ffn,
            "router": "sigmoid", **_count(layers, lambda i: i in moe)}


_READERS: dict[str, Callable[[_Json, str], dict]] = {
    "mixtral": lambda c, t: _all_moe(c, "num_local_experts"),
    "gpt_oss": lambda c, t: _all_moe(c, "num_local_experts"),
    "olmoe": lambda c, t: _all_moe(c, "num_experts"),
    "qwen2_moe": _qwen, "qwen3_moe": _qwen,
    "deepseek_v2": _deepseek, "deepseek_v3": _deepseek, "kimi_k2": _deepseek,
    "dbrx": _dbrx,
    "llama4": _llama4, "llama4_text": _llama4,
}
_ARCHITECTURES = {
    "MixtralForCausalLM": "mixtral", "GptOssForCausalLM": "gpt_oss", "OlmoeForCausalLM": "olmoe",
    "Qwen2MoeForCausalLM": "qwen2_moe", "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV2ForCausalLM": "deepseek_v2", "DeepseekV3ForCausalLM": "deepseek_v3",
    "DbrxForCausalLM": "dbrx",
    "Llama4ForConditionalGeneration": "llama4", "Llama4ForCausalLM": "llama4_text",
}


def _model_type(c: _Json) -> str:
    model_type = c.get("model_type")
    if model_type in _READERS:
        return model_type
    for arch in c.get("architectures", []) if isinstance(c.get("architectures"), list) else []:
        if arch in _ARCHITECTURES:
            return _ARCHITECTURES[arch]
    if model_type is None:
        archs = ", ".join(sorted(_ARCHITECTURES))
        raise c.error("model_type", unknown("model_type", "(missing)", _READERS)
                      + f"; or architectures containing one of: {archs}")
    raise c.error("model_type", unknown("MoE model_type", model_type, _READERS))


def _dtypes(c: _Json, model_type: str) -> dict:
    text = c.get("text_config") if model_type == "llama4" else None
    torch_dtype = c.get("torch_dtype") or c.get("dtype") or (text or {}).get("torch_dtype")
    if torch_dtype is not None and torch_dtype not in _TORCH_DTYPES:
        raise c.error("torch_dtype", unknown("torch_dtype", torch_dtype, _TORCH_DTYPES))
    unquantized = _TORCH_DTYPES.get(torch_dtype, "bf16")
    if c.get("quantization_config") is not None:
        return _quantized(c.nested("quantization_config", "a quantization config"), unquantized)
    return {"weight_dtype": unquantized}


def _quantized(q: _Json, unquantized: str) -> dict:
    """Dtype fields for a ``quantization_config`` (see the module docstring); ``unquantized``:
    the checkpoint's ``torch_dtype``, which weight-only GPTQ/AWQ keep for activations."""
    method = q.get("quant_method")
    if method == "fp8":
        block = q.get("weight_block_size")
        weight = "fp8" if block is not None else "fp8-tensor"
        if block is not None and list(block) != [128, 128]:
            raise q.error("weight_block_size", f"expected [128, 128] (got {block!r})")
        return {"weight_dtype": weight, "dispatch_dtype": "fp8"}
    if method == "mxfp4":
        return {"weight_dtype": "mxfp4", "compute_dtype": "bf16"}
    if method in ("gptq", "awq"):
        bits = q.optional("bits", 4, "bits per weight, 4 or 8", 1)
        if bits not in (4, 8):
            raise q.error("bits", f"expected 4 or 8 (got {bits!r})")
        act = {"activation_dtype": unquantized}
        if bits == 8:
            return {"weight_dtype": "int8", "compute_dtype": unquantized, **act}
        group = q.get("group_size", 128)
        if isinstance(group, bool) or not isinstance(group, int) or (group < 1 and group != -1):
            raise q.error("group_size", f"expected a positive integer or -1 (got {group!r})")
        return {"weight_dtype": "int4" if group == -1 else f"int4-g{group}", **act}
    if method == "modelopt":
        algo = q.choice("quant_algo", "NVFP4", ("NVFP4", "FP8"))
        return {"weight_dtype": "nvfp4"} if algo == "NVFP4" else \
            {"weight_dtype": "fp8-tensor", "dispatch_dtype": "fp8"}
    raise q.error("quant_method", unknown("quant_method", method, _QUANT_METHODS)
                  + "; describe this checkpoint in a moesim model YAML instead")


def _read_json(path: Path) -> dict:
    data = load_json_file(path)
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object (a Hugging Face config.json)", file=str(path))
    return data


def model_from_hf_config(path: str | Path) -> MoEModel:
    """The MoE layer shape in a Hugging Face ``config.json`` (see the module docstring).

    The name is the config's ``_name_or_path``, else the file stem. A missing field, an unknown
    ``model_type`` or an unsupported quantisation is a :class:`ConfigError` naming the file.
    """
    path = Path(path)
    c = _Json(_read_json(path), str(path))
    model_type = _model_type(c)
    fields = _READERS[model_type](c, model_type)
    fields.update(arch_fields(c, model_type, fields))
    name = str(c.get("_name_or_path", "")).strip().rstrip("/") or path.stem
    fields.update(_dtypes(c, model_type), name=name, source=str(path),
                  description=f"read from Hugging Face config.json (model_type {model_type})")
    return validate_model(fields, file=str(path))
