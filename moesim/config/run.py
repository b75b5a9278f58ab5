"""Run settings: how many tokens, how many devices, how experts are placed and routed."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moesim.config.errors import ConfigError
from moesim.config.limits import (MAX_REDUNDANT_SLOTS, MAX_ROUTING_SPEC_CHARS, bounded,
                                  limit_error, not_bool)
from moesim.config.yamlio import pydantic_error

#: Run fields users may set (YAML, Python overrides, sweeps).
RUN_FIELDS = ("tokens", "ep", "placement", "routing", "overlap", "a2a_kernel", "a2a_impl",
              "capacity_factor", "drop_tokens", "seed")
OVERLAP_CODES = {"none": 0, "shared": 1, "two-batch": 2}


class RunConfig(BaseModel):
    """``tokens`` is tokens per device entering the layer; ``ep`` the expert-parallel size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: int = Field(gt=0)
    ep: int = Field(1, gt=0)
    placement: str = "contiguous"
    routing: str = "uniform"
    overlap: Literal["none", "shared", "two-batch"] = "none"
    a2a_kernel: Literal["per-expert", "all-to-all-v", "per-device", "hierarchical",
                        "padded"] = "per-expert"
    # cost law of dispatch/combine: 'link' (the profile's links) or a family of the profile's
    # alltoall_kernels (deepep_normal, deepep_ll, nccl ...); checked against the profile later
    a2a_impl: str = Field("link", min_length=1, max_length=64)
    capacity_factor: float = Field(1.0, gt=0, allow_inf_nan=False)
    drop_tokens: bool = False  # drop assignments beyond expert capacity (else dropless)
    seed: int = Field(0, ge=0)

    @field_validator("tokens", "ep", "seed", "capacity_factor", mode="before")
    @classmethod
    def _not_bool(cls, value, info):
        return not_bool(value, info.field_name)

    @field_validator("tokens", "ep", "seed", "capacity_factor")
    @classmethod
    def _bounded(cls, value, info):
        return bounded(value, info.field_name)

    @field_validator("placement")
    @classmethod
    def _placement(cls, value: str) -> str:
        kind, _, arg = value.partition(":")
        if kind == "replicated" and arg.strip().isdigit() and int(arg) > MAX_REDUNDANT_SLOTS:
            raise ValueError(limit_error("redundant slots", int(arg), MAX_REDUNDANT_SLOTS,
                                         "MAX_REDUNDANT_SLOTS"))
        return value

    @field_validator("routing")
    @classmethod
    def _routing(cls, value: str) -> str:
        from moesim.config.specs import parse_routing

        if len(value) > MAX_ROUTING_SPEC_CHARS:
            raise ValueError(limit_error("routing spec length", len(value),
                                         MAX_ROUTING_SPEC_CHARS, "MAX_ROUTING_SPEC_CHARS"))
        try:
            parse_routing(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return value


def validate_run(data: dict) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc, model_cls=RunConfig) from None
