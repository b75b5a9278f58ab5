"""Whole-model architecture fields of a model description: attention, embeddings, dense layers.

They sit beside the MoE-layer fields of :class:`moesim.config.model.MoEModel` (which inherits
them) and are read from a Hugging Face ``config.json`` (``moesim.config.hf``) or a preset. A
value of 0 means "not described": per-layer prediction never needs these fields; whole-model
prediction (``moesim.wholemodel``) asks for the ones it uses and names any that are missing.

Attention kinds (``attention_kind``): ``mha`` (``kv_heads == heads``), ``gqa``
(``1 < kv_heads < heads``), ``mqa`` (``kv_heads == 1``) and ``mla`` (DeepSeek multi-head
latent attention, ``kv_lora_rank > 0``: queries through an optional low-rank ``q_lora_rank``,
keys/values from a shared latent of ``kv_lora_rank`` plus a ``qk_rope_head_dim`` rotary key;
``head_dim`` is then the no-rope query/key head dim, ``v_head_dim`` the value head dim).
``sliding_window`` with ``window_kind`` ``sliding`` (each token sees the last W tokens, gpt-oss)
or ``chunked`` (tokens see their own W-token chunk, Llama 4) applies to ``window_layers`` of
the layers; the rest attend to the whole context. ``cross_attention_layers``: decoder layers of
an encoder-decoder model (Switch Transformer) that also attend to the encoder.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from moesim.config.limits import bounded, not_bool

#: Integer architecture fields, bounded by :data:`moesim.config.limits.FIELD_LIMITS`.
ARCH_SIZE_FIELDS = ("vocab", "heads", "kv_heads", "head_dim", "q_lora_rank", "kv_lora_rank",
                    "qk_rope_head_dim", "v_head_dim", "sliding_window", "window_layers",
                    "dense_ffn", "cross_attention_layers")
ARCH_FIELDS = ("vocab", "heads", "kv_heads", "head_dim", "q_lora_rank", "kv_lora_rank",
               "qk_rope_head_dim", "v_head_dim", "sliding_window", "window_kind",
               "window_layers", "dense_ffn", "dense_gated", "tie_embeddings",
               "cross_attention_layers")


class ArchFields(BaseModel):
    """Architecture fields (0 = not described); see the module docstring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vocab: int = Field(0, ge=0, description="vocabulary size (embedding and LM-head rows)")
    heads: int = Field(0, ge=0, description="query heads")
    kv_heads: int = Field(0, ge=0, description="key/value heads (0: as many as heads)")
    head_dim: int = Field(0, ge=0, description="query/key head dim (MLA: the no-rope part; "
                                               "0: hidden // heads)")
    q_lora_rank: int = Field(0, ge=0, description="MLA query low-rank dim (0: full-rank q)")
    kv_lora_rank: int = Field(0, ge=0, description="MLA key/value latent dim (0: not MLA)")
    qk_rope_head_dim: int = Field(0, ge=0, description="MLA rotary query/key head dim")
    v_head_dim: int = Field(0, ge=0, description="value head dim (0: head_dim)")
    sliding_window: int = Field(0, ge=0, description="attention window in tokens (0: none)")
    window_kind: Literal["sliding", "chunked"] = "sliding"
    window_layers: int = Field(0, ge=0, description="layers that use the window")
    dense_ffn: int = Field(0, ge=0, description="intermediate size of the dense (non-MoE) "
                                                "layers' FFN")
    dense_gated: bool | None = Field(None, description="dense FFN gated (None: as the experts)")
    tie_embeddings: bool = Field(False, description="LM head shares the input embedding")
    cross_attention_layers: int = Field(0, ge=0, description="decoder layers with encoder "
                                                             "cross-attention")

    @field_validator(*ARCH_SIZE_FIELDS, mode="before")
    @classmethod
    def _arch_not_bool(cls, value, info):
        return not_bool(value, info.field_name)

    @field_validator(*ARCH_SIZE_FIELDS)
    @classmethod
    def _arch_bounded(cls, value: int, info) -> int:
        return bounded(value, info.field_name)

    def _check_arch(self) -> None:
        """Cross-field rules; raises ValueError (turned into a ConfigError by the loader)."""
        layers = self.moe_layers + self.dense_layers
        if self.kv_heads and not self.heads:
            raise ValueError("kv_heads needs heads")
        if self.kv_heads and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads "
                             f"({self.kv_heads})")
        if self.heads and not self.head_dim and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) is not a multiple of heads ({self.heads});"
                             " give head_dim")
        if self.window_layers > layers:
            raise ValueError(f"window_layers ({self.window_layers}) exceeds the layers "
                             f"({layers})")
        if self.window_layers and not self.sliding_window:
            raise ValueError("window_layers > 0 needs sliding_window > 0")
        if self.kv_lora_rank and not self.qk_rope_head_dim:
            raise ValueError("MLA (kv_lora_rank > 0) needs qk_rope_head_dim > 0")
        if self.cross_attention_layers > layers:
            raise ValueError(f"cross_attention_layers ({self.cross_attention_layers}) exceeds "
                             f"the layers ({layers})")

    @property
    def layers(self) -> int:
        return self.moe_layers + self.dense_layers

    @property
    def attention_kind(self) -> str:
        """mha | gqa | mqa | mla, or '' when the attention is not described."""
        if not self.heads:
            return ""
        if self.kv_lora_rank:
            return "mla"
        kv = self.kv_heads or self.heads
        return "mha" if kv == self.heads else ("mqa" if kv == 1 else "gqa")


def model_columns(models) -> dict:
    """Field name -> array ``[rows]`` over ``models`` (what ``moesim.core`` functions take)."""
    import numpy as np

    names = type(models[0]).model_fields
    return {f: np.array([getattr(m, f) for m in models], dtype=object if f.endswith("dtype")
                        or f in ("window_kind", "router", "name", "description", "source")
                        else None) for f in names}
