"""MoE model descriptions: the per-layer shape that the cost model needs, with its source."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moesim.config import dtypes
from moesim.config.arch import ARCH_FIELDS, ArchFields
from moesim.config.dtypes import DTYPE_BYTES
from moesim.config.errors import ConfigError, unknown
from moesim.config.limits import bounded, not_bool
from moesim.config.yamlio import load_yaml, pydantic_error

PRESET_DIR = Path(__file__).resolve().parents[1] / "presets" / "models"

#: The model fields users may set (YAML, Python overrides, sweeps).
MODEL_FIELDS = ("hidden", "expert_ffn", "experts", "top_k", "shared_experts", "shared_expert_ffn",
                "gated", "router", "num_groups", "topk_groups", "moe_layers", "dense_layers",
                "weight_dtype", "compute_dtype", "activation_dtype", "dispatch_dtype",
                "combine_dtype") + ARCH_FIELDS
#: Integer size fields, bounded by :data:`moesim.config.limits.FIELD_LIMITS`.
SIZE_FIELDS = ("hidden", "expert_ffn", "experts", "top_k", "shared_experts", "shared_expert_ffn",
               "num_groups", "topk_groups", "moe_layers", "dense_layers")


class MoEModel(ArchFields):
    """One MoE layer's shape and the model's layer counts.

    ``expert_ffn`` is the intermediate size of one routed expert; a gated (SwiGLU) expert has
    three matrices (gate, up: hidden x ffn; down: ffn x hidden), an ungated one two.
    ``num_groups``/``topk_groups``: group-limited routing (DeepSeek-V3: 8 groups, top-4).
    Dtypes are storage formats (:mod:`moesim.config.dtypes`: ``fp8`` block-scaled, ``fp8-tensor``,
    ``mxfp4``, ``nvfp4``, ``int4-g128`` ...); ``compute_dtype`` (an arithmetic dtype) defaults
    to what the weight format implies (``fp8`` -> fp8, ``nvfp4`` -> fp4, weight-only int4 ->
    the activation dtype).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    description: str = ""
    source: str = ""
    hidden: int = Field(gt=0)
    expert_ffn: int = Field(gt=0)
    experts: int = Field(gt=0)
    top_k: int = Field(gt=0)
    shared_experts: int = Field(0, ge=0)
    shared_expert_ffn: int = Field(0, ge=0)
    gated: bool = True
    router: Literal["softmax", "sigmoid"] = "softmax"
    num_groups: int = Field(1, gt=0)
    topk_groups: int = Field(1, gt=0)
    moe_layers: int = Field(1, gt=0)
    dense_layers: int = Field(0, ge=0)
    weight_dtype: str = "bf16"
    compute_dtype: str | None = None
    activation_dtype: str = "bf16"
    dispatch_dtype: str = "bf16"
    combine_dtype: str = "bf16"

    @field_validator("weight_dtype", "activation_dtype", "dispatch_dtype", "combine_dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        try:
            return dtypes.check_dtype(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @field_validator("compute_dtype")
    @classmethod
    def _compute_dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in dtypes.DTYPE_BYTES:
            raise ValueError(unknown("compute dtype", value, dtypes.DTYPE_BYTES))
        return value

    @field_validator(*SIZE_FIELDS, mode="before")
    @classmethod
    def _not_bool(cls, value, info):
        return not_bool(value, info.field_name)

    @field_validator(*SIZE_FIELDS)
    @classmethod
    def _bounded(cls, value: int, info) -> int:
        return bounded(value, info.field_name)

    @model_validator(mode="after")
    def _consistent(self) -> "MoEModel":
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) must be <= experts ({self.experts})")
        if self.experts % self.num_groups:
            raise ValueError(f"experts ({self.experts}) must divide into num_groups "
                             f"({self.num_groups})")
        if self.topk_groups > self.num_groups:
            raise ValueError(f"topk_groups ({self.topk_groups}) must be <= num_groups "
                             f"({self.num_groups})")
        per_group = self.experts // self.num_groups
        if self.top_k > self.topk_groups * per_group:
            raise ValueError(f"top_k ({self.top_k}) exceeds the experts in topk_groups groups "
                             f"({self.topk_groups} x {per_group})")
        if self.shared_experts and not self.shared_expert_ffn:
            raise ValueError("shared_experts > 0 needs shared_expert_ffn > 0")
        self._check_arch()
        return self

    @property
    def gemm_dtype(self) -> str:
        return dtypes.compute_dtype(self.weight_dtype, self.compute_dtype, self.activation_dtype)

    @property
    def matrices(self) -> int:
        return 3 if self.gated else 2

    def expert_params(self) -> int:
        """Parameters of one routed expert: matrices x hidden x expert_ffn."""
        return self.matrices * self.hidden * self.expert_ffn

    def shared_params(self) -> int:
        return self.shared_experts * self.matrices * self.hidden * self.shared_expert_ffn

    def moe_layer_params(self) -> int:
        """Routed experts + shared experts + router (hidden x experts)."""
        return self.experts * self.expert_params() + self.shared_params() + self.hidden * self.experts

    def active_moe_layer_params(self) -> int:
        return self.top_k * self.expert_params() + self.shared_params() + self.hidden * self.experts

    def with_overrides(self, **overrides) -> "MoEModel":
        """A validated copy with fields replaced; an unknown field is a ConfigError."""
        if not overrides:
            return self
        bad = [k for k in overrides if k not in type(self).model_fields]
        if bad:
            raise ConfigError(unknown("model field", bad[0], MODEL_FIELDS), field=bad[0])
        return validate_model({**self.model_dump(), **overrides}, file=None)


def validate_model(data: dict, file: str | None = None, doc=None, prefix: tuple = ()) -> MoEModel:
    try:
        return MoEModel.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc, doc, file=file, prefix=prefix, model_cls=MoEModel) from None


def available_models(directory: Path = PRESET_DIR) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def load_model(name_or_path: str | Path | MoEModel, **overrides) -> MoEModel:
    """A preset by name, a moesim model YAML, or a Hugging Face ``config.json``; then overrides."""
    if isinstance(name_or_path, MoEModel):
        return name_or_path.with_overrides(**overrides)
    text = str(name_or_path)
    path = Path(text)
    if path.suffix == ".json":
        from moesim.config.hf import model_from_hf_config

        return model_from_hf_config(path).with_overrides(**overrides)
    presets = available_models()
    if path.suffix not in (".yaml", ".yml"):
        if text not in presets:
            raise ConfigError(unknown("model", text, presets), field="model")
        path = presets[text]
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError("expected a mapping of model fields", file=str(path))
    model = validate_model(doc.data, doc=doc)
    try:
        return model.with_overrides(**overrides)
    except ConfigError as exc:
        raise exc.located(file=None) from None
