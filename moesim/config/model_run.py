"""How a whole model is served (validated run settings of whole-model prediction): phase,
batch, prompt and context lengths, the parallel layout (TP, DP attention, PP, expert TP), the
KV-cache dtype, the engine's kernel counts and the MLA decode form; see ``moesim.wholemodel``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moesim.config.limits import bounded, not_bool
from moesim.config.yamlio import pydantic_error

MODEL_RUN_FIELDS = ("phase", "batch", "prompt_len", "context", "tp", "dp_attn", "pp", "moe_tp",
                    "kv_dtype", "engine", "mla_decode", "memory_utilization")
MOE_RUN_FIELDS = ("placement", "routing", "overlap", "a2a_kernel", "a2a_impl", "capacity_factor",
                  "drop_tokens", "seed")
#: Integer run fields, bounded by :data:`moesim.config.limits.FIELD_LIMITS`.
RUN_SIZE_FIELDS = ("batch", "prompt_len", "context", "tp", "dp_attn", "pp", "moe_tp")


class ModelRun(BaseModel):
    """How a whole model is served; see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phase: Literal["prefill", "decode"] = "decode"
    batch: int = Field(1, gt=0, description="sequences in flight over the whole deployment")
    prompt_len: int = Field(1024, gt=0, description="prefill: prompt tokens per sequence")
    context: int = Field(4096, ge=0, description="decode: tokens already in each KV cache")
    tp: int = Field(1, gt=0)
    dp_attn: int = Field(1, gt=0)
    pp: int = Field(1, gt=0)
    moe_tp: int = Field(1, gt=0)
    kv_dtype: str | None = Field(None, description="KV-cache dtype (default: activation dtype)")
    engine: Literal["fused", "eager"] = "fused"
    mla_decode: Literal["absorbed", "expand"] = Field(
        "absorbed", description="MLA decode: attend in the cached latent (FlashMLA, serving "
                                "engines) or re-expand it every step (Hugging Face transformers)")
    memory_utilization: float = Field(0.9, gt=0, le=1.0)

    @field_validator(*RUN_SIZE_FIELDS, mode="before")
    @classmethod
    def _not_bool(cls, value, info):
        return not_bool(value, info.field_name)

    @field_validator(*RUN_SIZE_FIELDS)
    @classmethod
    def _bounded(cls, value: int, info) -> int:
        return bounded(value, info.field_name)


def validate_model_run(data: dict) -> ModelRun:
    try:
        return ModelRun.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc, model_cls=ModelRun) from None
