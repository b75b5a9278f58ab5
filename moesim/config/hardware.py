"""Hardware profiles: datasheet peaks (each with its source) and named efficiency factors.

A profile is a YAML file in ``hardware_profiles/`` (or any path). ``base: NAME`` makes a profile
extend another: the child's mappings are merged over the base's, key by key.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from moesim.config.dtypes import DTYPE_BYTES
from moesim.config.errors import ConfigError, unknown
from moesim.config.limits import (BANDWIDTH_RANGE_BYTES_PER_S, CAPACITY_RANGE_BYTES,
                                  MAX_COMPUTE_UNITS, MAX_DOMAIN_SIZE, MAX_GEMM_TILE, MAX_LATENCY_S,
                                  PEAK_FLOPS_RANGE)
from moesim.config.yamlio import LocatedYaml, load_yaml, pydantic_error
from moesim.config.efficiency import (KERNEL_PHASES, AlltoallKernel, Efficiencies,  # noqa: F401
                                      Efficiency, KernelFactor, PhaseCosts, ShapeGrid, _Frozen)

PROFILE_DIR = Path(__file__).resolve().parents[2] / "hardware_profiles"


class Compute(_Frozen):
    """Compute units and dense (no sparsity) peak FLOP/s per dtype."""

    units: int = Field(gt=0, le=MAX_COMPUTE_UNITS,
                       description="SMs (NVIDIA), CUs (AMD) or cores (CPU)")
    peak_flops_per_s: dict[str, float]
    gemm_tile_m: int = Field(128, gt=0, le=MAX_GEMM_TILE,
                             description="GEMM output tile rows (tokens)")
    gemm_tile_n: int = Field(128, gt=0, le=MAX_GEMM_TILE, description="GEMM output tile columns")
    launch_overhead_s: float = Field(ge=0, le=MAX_LATENCY_S,
                                     description="fixed cost of one kernel launch")
    grouped_gemm: bool = Field(True, description="expert GEMMs run as one grouped kernel "
                               "(else one kernel per expert with tokens)")
    comm_overlap_fraction: float = Field(ge=0.0, le=1.0, description=(
        "share of min(exchange, compute) that overlap modes hide: 1 where engines apart from "
        "the compute units move the bytes (GPU copy engines, NVLink/RDMA), less where the "
        "ranks' own cores do (CPU ranks over gloo; measured by the shared-profile step)"))
    split_k_min_k: int = Field(gt=0, description=(
        "split-K keeps at least this much of K per split (``core.gemm``): thin GEMMs with "
        "fewer output tiles than units split K up to K // split_k_min_k ways"))
    exp_per_s: float | None = Field(None, gt=0, le=PEAK_FLOPS_RANGE[1], description=(
        "exponentials per second of the special-function units (attention's softmax, "
        "core.attention); unset: not charged"))
    idle_peer_speedup: float = Field(1.0, ge=1.0, description=(
        "ranks that share cores (a per-rank profile measured with all ranks busy): how much "
        "faster one rank computes while its peers wait; 1 for a dedicated device"))

    @field_validator("peak_flops_per_s")
    @classmethod
    def _dtypes_known(cls, value: dict[str, float]) -> dict[str, float]:
        for name, peak in value.items():
            if name not in DTYPE_BYTES:
                raise ValueError(unknown("dtype", name, DTYPE_BYTES))
            if not PEAK_FLOPS_RANGE[0] <= peak <= PEAK_FLOPS_RANGE[1]:
                raise ValueError(f"peak for {name} must be in [{PEAK_FLOPS_RANGE[0]:g}, "
                                 f"{PEAK_FLOPS_RANGE[1]:g}] FLOP/s (limits.PEAK_FLOPS_RANGE), "
                                 f"got {peak}")
        return value


def _at_least(value: float, field: str) -> float:
    """Lower bounds of limits.*_RANGE_*: below them a transfer time overflows to inf."""
    low = CAPACITY_RANGE_BYTES[0] if field == "capacity_bytes" else BANDWIDTH_RANGE_BYTES_PER_S[0]
    if value < low:
        raise ValueError(f"must be at least {low:g} (moesim.config.limits), got {value}")
    return value


class Memory(_Frozen):
    capacity_bytes: float = Field(gt=0, le=CAPACITY_RANGE_BYTES[1])
    bandwidth_bytes_per_s: float = Field(gt=0, le=BANDWIDTH_RANGE_BYTES_PER_S[1])
    l2_bytes: float = Field(ge=0, le=CAPACITY_RANGE_BYTES[1])
    reserved_bytes: float = Field(ge=0, le=CAPACITY_RANGE_BYTES[1], description=(
        "device memory weights and caches cannot use: runtime context, allocator slack, "
        "activation workspace (offload memory plans subtract it)"))

    _floor = field_validator("capacity_bytes", "bandwidth_bytes_per_s")(
        classmethod(lambda cls, v, info: _at_least(v, info.field_name)))


class Link(_Frozen):
    """One link class seen from one device: unidirectional bandwidth and one-way latency."""

    bandwidth_bytes_per_s: float = Field(gt=0, le=BANDWIDTH_RANGE_BYTES_PER_S[1])
    latency_s: float = Field(ge=0, le=MAX_LATENCY_S)

    _floor = field_validator("bandwidth_bytes_per_s")(
        classmethod(lambda cls, v, info: _at_least(v, info.field_name)))


class ScaleUp(Link):
    domain_size: int = Field(gt=0, le=MAX_DOMAIN_SIZE,
                             description="devices per NVLink/xGMI domain (a 'node')")


class HardwareProfile(_Frozen):
    name: str
    description: str
    kind: Literal["datasheet", "calibrated"] = "datasheet"
    base: str | None = None
    compute: Compute
    memory: Memory
    scale_up: ScaleUp
    scale_out: Link
    host_link: Link | None = None
    efficiency: Efficiencies
    alltoall_kernels: dict[str, AlltoallKernel] = Field(default_factory=dict)
    sources: dict[str, str] = Field(default_factory=dict)
    provenance: dict | None = None
    fit_quality: dict | None = None

    @model_validator(mode="after")
    def _host_link_efficiency(self) -> "HardwareProfile":
        if self.host_link is not None and self.efficiency.host_link_bandwidth is None:
            raise ValueError("a profile with host_link needs efficiency.host_link_bandwidth "
                             "(the fraction of the link's peak that expert copies reach)")
        return self

    def peak_flops_per_s(self, dtype: str) -> float:
        peaks = self.compute.peak_flops_per_s
        if dtype not in peaks:
            raise ConfigError(
                f"hardware '{self.name}' has no {dtype} peak; expected one of: "
                f"{', '.join(sorted(peaks))} (set weight_dtype/compute_dtype to one of these)",
                field="compute_dtype")
        return peaks[dtype]

    def digest(self) -> str:
        """Short hash of the resolved profile, for result provenance."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "efficiency":
            out[key] = _merge(out[key], value)
        elif key == "efficiency" and isinstance(out.get(key), dict) and isinstance(value, dict):
            merged = {**out[key], **value}  # an efficiency is replaced whole
            base_phases, phases = out[key].get("phases"), value.get("phases")
            if isinstance(base_phases, dict) and isinstance(phases, dict):
                # except the base's per-phase kernel counts, which serve dtypes the child omits
                merged["phases"] = {**phases, "kernels": {**base_phases.get("kernels", {}),
                                                          **phases.get("kernels", {})}}
            out[key] = merged
        else:
            out[key] = value
    return out


def available_profiles(directory: Path = PROFILE_DIR) -> dict[str, Path]:
    """Profile name -> file, for every YAML under ``directory`` (calibrated/ included)."""
    found: dict[str, Path] = {}
    for path in sorted(directory.rglob("*.yaml")):
        found.setdefault(path.stem, path)
    return found


def _resolve_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    text = str(name_or_path)
    candidates = [Path(text)]
    if relative_to is not None:
        candidates.insert(0, relative_to / text)
    for cand in candidates:
        if cand.suffix in (".yaml", ".yml") and cand.is_file():
            return cand.resolve()
    profiles = available_profiles()
    if text in profiles:
        return profiles[text]
    raise ConfigError(unknown("hardware profile", text, profiles), field="hardware")


def _raw(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, LocatedYaml]:
    if path in seen:
        raise ConfigError("circular 'base:' chain", file=str(path), field="base")
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError("expected a mapping of profile fields", file=str(path))
    data = doc.data
    base = data.get("base")
    if base:
        try:
            base_path = _resolve_path(base, relative_to=path.parent)
        except ConfigError as exc:
            raise exc.located(file=str(path), line=doc.line_of(("base",)), field_prefix=None) from None
        base_data, _ = _raw(base_path, seen + (path,))
        base_sources = base_data.get("sources", {})
        data = _merge({k: v for k, v in base_data.items() if k not in ("name", "description",
                                                                      "kind", "provenance",
                                                                      "fit_quality")}, data)
        sources = doc.data.get("sources", {})
        if isinstance(base_sources, dict) and isinstance(sources, dict):  # else pydantic says
            data["sources"] = {**base_sources, **sources}
    return data, doc


@lru_cache(maxsize=256)
def _load_cached(path: Path, mtime: float) -> HardwareProfile:
    data, doc = _raw(path)
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc, doc, model_cls=HardwareProfile) from None


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """Load a profile by name (``h100-sxm``) or by path, resolving ``base:``."""
    if isinstance(name_or_path, HardwareProfile):
        return name_or_path
    path = _resolve_path(name_or_path)
    return _load_cached(path, path.stat().st_mtime)
