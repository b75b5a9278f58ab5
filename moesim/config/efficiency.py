"""The efficiency fields of a hardware profile: how much of each datasheet peak a kernel
reaches, as a constant, a curve over GEMM M, a per-dtype curve or an (M, N, K) grid, plus the
fused-MoE kernel factor, the small phases' kernel counts and the all-to-all kernel families.
Every field carries a ``basis`` (measured / assumption) and a ``note`` giving its source.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from moesim.config.errors import ConfigError
from moesim.config.limits import BANDWIDTH_RANGE_BYTES_PER_S, MAX_LATENCY_S
from moesim.config.shape_grid import gemm_grid_efficiency


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


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


class GemmCallCost(_Frozen):
    """What one GEMM call costs beyond its launch, per dtype, paid by every expert GEMM with
    tokens (``moesim.core.gemm.grouped_gemm``): a CPU's bf16 matmul sets up its kernel on each
    call (~15 us on Zen 4 against ~0 in fp32), and ``torch._grouped_mm`` on a CPU runs one
    matmul per expert. Keys are dtypes, ``default`` for the others."""

    fixed_s: dict[str, float] = Field(default_factory=dict)
    basis: Literal["measured", "assumption"]
    note: str = Field(min_length=3)

    @field_validator("fixed_s")
    @classmethod
    def _bounded(cls, value: dict[str, float]) -> dict[str, float]:
        for key, seconds in value.items():
            if not 0 <= seconds <= MAX_CALL_FIXED_S:
                raise ValueError(f"fixed_s['{key}'] must be in [0, {MAX_CALL_FIXED_S}] s, "
                                 f"got {seconds}")
        return value

    def fixed(self, dtype: str) -> float:
        return float(self.fixed_s.get(dtype, self.fixed_s.get("default", 0.0)))


#: Upper bound of a per-call GEMM fixed cost: 1 ms is ~100x what any measured device pays.
MAX_CALL_FIXED_S = 1e-3

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
    gemm_call: GemmCallCost | None = None  # per-call fixed cost of expert GEMMs, per dtype


class AlltoallKernel(_Frozen):
    """One all-to-all kernel family (e.g. ``deepep_normal/dispatch``): t = latency + bytes / bw
    over one link class, bytes = what one device sends to the others."""

    link: Literal["scale_up", "scale_out"] = "scale_up"
    latency_s: float = Field(ge=0, le=MAX_LATENCY_S)
    bandwidth_bytes_per_s: float = Field(gt=0, le=BANDWIDTH_RANGE_BYTES_PER_S[1])
    basis: Literal["measured", "assumption"]
    note: str = Field(min_length=3)
