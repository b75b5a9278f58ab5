"""Hardware profiles: datasheet peaks (each with its source) and named efficiency factors.

A profile is a YAML file in ``hardware_profiles/`` (or any path). ``base: NAME`` makes a profile
extend another: the child's mappings are merged over the base's, key by key.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)

from moesim.config.dtypes import DTYPE_BYTES
from moesim.config.errors import ConfigError, unknown
from moesim.config.limits import (BANDWIDTH_RANGE_BYTES_PER_S, CAPACITY_RANGE_BYTES,
                                  MAX_COMPUTE_UNITS, MAX_DOMAIN_SIZE, MAX_GEMM_TILE, MAX_LATENCY_S,
                                  PEAK_FLOPS_RANGE)
from moesim.config.yamlio import LocatedYaml, load_yaml, pydantic_error
from moesim.config.shape_grid import gemm_grid_efficiency

PROFILE_DIR = Path(__file__).resolve().parents[2] / "hardware_profiles"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


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


class ShapeGrid(_Frozen):
    """Efficiency measured on a grid of GEMM shapes: ``values[i][j][l]`` at ``(m[i], n[j], k[l])``
    (M = tile-padded tokens per hit expert, N output columns, K reduction length); interpolated
    in log space by :func:`moesim.config.shape_grid.gemm_grid_efficiency`."""

    m: list[float] = Field(min_length=1)
    n: list[float] = Field(min_length=1)
    k: list[float] = Field(min_length=1)
    values: list[list[list[float]]]
    _arrays: tuple = PrivateAttr()

    @model_validator(mode="after")
    def _consistent(self) -> "ShapeGrid":
        for name in ("m", "n", "k"):
            axis = np.asarray(getattr(self, name), dtype=float)
            if not (axis > 0).all() or (np.diff(axis) <= 0).any():
                raise ValueError(f"grid axis '{name}' must be positive and increasing")
        values = np.asarray(self.values, dtype=float)
        if values.shape != (len(self.m), len(self.n), len(self.k)):
            raise ValueError(f"grid values have shape {values.shape}, expected "
                             f"({len(self.m)}, {len(self.n)}, {len(self.k)}) = (m, n, k)")
        if not ((values > 0) & (values <= 1.0)).all():
            raise ValueError("grid efficiencies must be in (0, 1]")
        self._arrays = (np.asarray(self.m, float), np.asarray(self.n, float),
                        np.asarray(self.k, float), values)
        return self

    def at(self, m, n, k) -> np.ndarray:
        return gemm_grid_efficiency(*self._arrays[:3], self._arrays[3], m, n, k)


class Efficiency(_Frozen):
    """A named efficiency: a constant, a curve over ``x`` interpolated in log(x), or (GEMMs) a
    grid over the shape (M, N, K) per dtype.

    ``points`` may be given per dtype (``by_dtype``); ``default`` serves dtypes not listed.
    ``grid``: per dtype a :class:`ShapeGrid`; ``grid_alias`` maps a dtype without its own grid to
    one that has one (e.g. ``fp4: nvfp4``). ``basis`` says where it comes from; ``note`` the
    rationale or the measurement.
    """

    value: float | None = Field(None, gt=0, le=1.0)
    points: list[tuple[float, float]] | None = None
    by_dtype: dict[str, list[tuple[float, float]]] | None = None
    grid: dict[str, ShapeGrid] | None = None
    grid_alias: dict[str, str] = Field(default_factory=dict)
    basis: Literal["measured", "assumption"]
    note: str = Field(min_length=3)
    max_value: ClassVar[float] = 1.0

    @model_validator(mode="after")
    def _one_form(self) -> "Efficiency":
        forms = sum(x is not None for x in (self.value, self.points, self.by_dtype, self.grid))
        if forms != 1:
            raise ValueError("give exactly one of 'value', 'points', 'by_dtype' or 'grid'")
        for pts in [self.points or []] + list((self.by_dtype or {}).values()):
            for x, eff in pts:
                if not (x > 0 and 0 < eff <= self.max_value):
                    raise ValueError(f"point ({x}, {eff}): need x > 0 and 0 < value <= "
                                     f"{self.max_value:g}")
        for alias, target in self.grid_alias.items():
            if self.grid is None or target not in self.grid:
                raise ValueError(f"grid_alias '{alias}: {target}' names no grid")
        return self

    def _grid(self, dtype: str | None) -> ShapeGrid:
        name = self.grid_alias.get(dtype, dtype)
        if name not in self.grid:
            name = "default"
        if name not in self.grid:
            raise ConfigError(f"no efficiency grid for dtype '{dtype}' (grids: "
                              f"{', '.join(sorted(self.grid))}) and no 'default' grid",
                              field="efficiency.gemm.grid")
        return self.grid[name]

    def curve(self, dtype: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(log x, efficiency) arrays for interpolation; a constant has one point."""
        if self.value is not None:
            return np.zeros(1), np.array([self.value])
        if self.grid is not None:  # M only: the grid's median over (N, K) at each M node
            g = self._grid(dtype)
            return np.log(g.m), np.median(np.asarray(g.values, float).reshape(len(g.m), -1), 1)
        pts = self.points
        if pts is None:
            pts = self.by_dtype.get(dtype) if dtype in self.by_dtype else self.by_dtype.get("default")
            if pts is None:
                raise ConfigError(f"no curve for dtype '{dtype}' and no 'default' curve",
                                  field="efficiency.by_dtype")
        pts = sorted(pts)
        return np.log([p[0] for p in pts]), np.array([p[1] for p in pts])

    def at(self, x, dtype: str | None = None, n=None, k=None) -> np.ndarray:
        """Efficiency at ``x`` (array; M for GEMMs), interpolated in log(x), flat beyond the
        ends. A grid also reads the GEMM's ``n`` and ``k`` (broadcast with ``x``); M-only
        forms ignore them."""
        if self.grid is not None and n is not None and k is not None:
            return self._grid(dtype).at(x, n, k)
        log_x, eff = self.curve(dtype)
        x = np.maximum(np.asarray(x, dtype=float), 1e-30)
        if eff.size == 1:
            return np.full(x.shape, eff[0])
        return np.interp(np.log(x), log_x, eff)


class KernelFactor(Efficiency):
    """A multiplier on another efficiency (same forms), e.g. a fused MoE kernel against the
    dense GEMMs of the same shape; may exceed 1 where the fused kernel skips work the dense
    op pays for (per-call activation quantisation, separate launches)."""

    max_value: ClassVar[float] = 8.0
    fixed_s: dict[str, float] = Field(default_factory=dict, description=(
        "fixed time per call of the fused kernel per dtype ('default' for others), added to "
        "the expert GEMMs on a device with tokens"))

    fixed_per_expert_s: dict[str, float] = Field(default_factory=dict, description=(
        "fixed time per call per expert held on the device, per dtype ('default' for others): "
        "per-expert setup a fused kernel pays for every local expert, hit or not"))

    def fixed(self, dtype: str) -> float:
        return float(self.fixed_s.get(dtype, self.fixed_s.get("default", 0.0)))

    def fixed_per_expert(self, dtype: str) -> float:
        table = self.fixed_per_expert_s
        return float(table.get(dtype, table.get("default", 0.0)))


#: The memory-bound phases whose kernel launches a profile counts (``efficiency.phases``).
KERNEL_PHASES = ("router", "permute", "unpermute", "activation")


class PhaseCosts(_Frozen):
    """How the small memory-bound phases run on this device and framework.

    ``kernels``: kernel launches (torch ops) per phase, each costing ``launch_overhead_s``;
    ``memory_efficiency``: fraction of peak memory bandwidth the phase's streaming reaches.
    Keys are ``phase`` or ``phase/dtype`` (the dtype of the activations); every phase of
    :data:`KERNEL_PHASES` needs a bare ``phase`` key in ``kernels`` (the count for dtypes not
    listed; a ``base:`` profile's keys are kept under a child's); ``memory_efficiency`` falls back
    to ``efficiency.memory_bandwidth``.
    """

    kernels: dict[str, float] = Field(default_factory=dict, validate_default=True)
    memory_efficiency: dict[str, float] = Field(default_factory=dict)
    basis: Literal["measured", "assumption"]
    note: str = Field(min_length=3)

    @field_validator("memory_efficiency")
    @classmethod
    def _fraction(cls, value: dict[str, float]) -> dict[str, float]:
        for key, eff in value.items():
            if not 0 < eff <= 1:
                raise ValueError(f"memory_efficiency['{key}'] must be in (0, 1], got {eff}")
        return value

    @field_validator("kernels")
    @classmethod
    def _every_phase(cls, value: dict[str, float]) -> dict[str, float]:
        missing = [p for p in KERNEL_PHASES if p not in value]
        if missing:
            raise ValueError(f"kernels needs a count for every phase; missing {missing} "
                             f"(expected keys {', '.join(KERNEL_PHASES)}, optionally /dtype)")
        return value

    def lookup(self, table: str, phase: str, dtype: str, default: float | None = None) -> float:
        values = getattr(self, table)
        return values.get(f"{phase}/{dtype}", values.get(phase, default))


class Efficiencies(_Frozen):
    """The efficiency factors the cost model reads. See docs in each profile for rationale."""

    gemm: Efficiency  # fraction of peak FLOP/s per full tile; x = tokens per expert (GEMM M)
    memory_bandwidth: Efficiency  # fraction of HBM/DRAM peak reached by streaming kernels
    scale_up_bandwidth: Efficiency  # fraction of NVLink/xGMI peak reached by all-to-all
    scale_out_bandwidth: Efficiency  # fraction of NIC peak reached by all-to-all
    host_link_bandwidth: Efficiency | None = None  # fraction of host-link peak (expert fetches)
    phases: PhaseCosts  # kernels and streaming efficiency of memory-bound phases
    # fused MoE (grouped) kernel's efficiency relative to ``gemm`` at the same shape, per dtype
    # over tokens per hit expert; None = grouped GEMMs run like the dense GEMMs
    grouped_gemm: KernelFactor | None = None


class AlltoallKernel(_Frozen):
    """One all-to-all kernel family (e.g. ``deepep_normal/dispatch``): t = latency + bytes / bw
    over one link class, bytes = what one device sends to the others."""

    link: Literal["scale_up", "scale_out"] = "scale_up"
    latency_s: float = Field(ge=0, le=MAX_LATENCY_S)
    bandwidth_bytes_per_s: float = Field(gt=0, le=BANDWIDTH_RANGE_BYTES_PER_S[1])
    basis: Literal["measured", "assumption"]
    note: str = Field(min_length=3)


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
