"""What the suite measures: shapes, token counts, sizes (pure, no torch).

GEMM shapes come from the model presets: a routed expert runs ``[M, hidden] x [hidden,
(m-1) * expert_ffn]`` (gate|up, m = 3 gated) and ``[M, expert_ffn] x [expert_ffn, hidden]``
(down); M = tokens per expert. ``--quick`` keeps a few presets plus two small CPU-scale shapes
(``SMALL_SHAPES``); a point is left out when its FLOPs exceed ``max_gemm_flops``. Time is
budgeted in seconds per section (``caps_s``, see ``budget``): the suite skips points that would
overrun them on a slow CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from moesim.config import available_models, load_model
from moesim.harness.microbench.budget import FULL_CAPS_S, QUICK_CAPS_S, scaled_caps
from moesim.harness.timing import FULL, QUICK, BenchConfig

KiB, MiB = 1024, 1024 * 1024

#: Small weight matrices ``[k, n]`` whose grouped GEMMs (1 and 16 experts, 1 and 4 rows each)
#: expose the per-call fixed cost of a GEMM (``efficiency.gemm_call``): at these sizes it is most
#: of the time, where the reference shapes bury it under weight streaming.
CALL_SHAPES = ((64, 128), (128, 256), (256, 128), (256, 512))
CALL_SOURCE = "gemm-call"

#: (hidden, expert_ffn) of small gated expert FFNs, the scale of MoE layers run on a CPU.
SMALL_SHAPES = {"cpu-small-512": (512, 1024), "cpu-small-1024": (1024, 2048)}
QUICK_PRESETS = ("qwen3-30b-a3b", "olmoe-1b-7b", "deepseek-v3")


@dataclass(frozen=True)
class GemmShape:
    """One weight matrix ``[k, n]``; ``source`` names the preset and the GEMM (up/down)."""

    k: int
    n: int
    source: str

    @property
    def key(self) -> str:
        return f"{self.k}x{self.n}"


def call_points() -> tuple[tuple[int, int, GemmShape], ...]:
    """(experts, rows per expert, shape) of the per-call cost probe (``CALL_SHAPES``)."""
    return tuple((e, m, GemmShape(k, n, f"{CALL_SOURCE}:{k}x{n}"))
                 for k, n in CALL_SHAPES for e in (1, 16) for m in (1, 4))


def expert_shapes(hidden: int, ffn: int, gated: bool, source: str) -> list[GemmShape]:
    up = (2 if gated else 1) * ffn
    return [GemmShape(hidden, up, f"{source}:up"), GemmShape(ffn, hidden, f"{source}:down")]


def preset_shapes(names=None, small: bool = True) -> list[GemmShape]:
    """Unique expert GEMM shapes of the named presets (all when None), plus ``SMALL_SHAPES``."""
    shapes: dict[tuple[int, int], GemmShape] = {}
    found = []
    if small:
        found += [s for name, (h, f) in SMALL_SHAPES.items()
                  for s in expert_shapes(h, f, True, name)]
    for name in names if names is not None else sorted(available_models()):
        m = load_model(name)
        found += expert_shapes(m.hidden, m.expert_ffn, m.gated, name)
    for s in found:
        shapes.setdefault((s.k, s.n), s)
    return sorted(shapes.values(), key=lambda s: (s.k * s.n, s.k))


def token_grid(max_tokens: int) -> list[int]:
    """Powers of two from 1 to ``max_tokens`` (GEMM M = tokens per expert)."""
    out, m = [], 1
    while m <= max_tokens:
        out.append(m)
        m *= 2
    return out


@dataclass(frozen=True)
class Plan:
    """One suite run. Sizes in bytes, FLOP budgets in FLOPs."""

    dtypes: tuple[str, ...]
    gemm_shapes: tuple[GemmShape, ...]
    tokens: tuple[int, ...]
    max_gemm_flops: float
    grouped: tuple[tuple[int, int, GemmShape], ...]  # (experts, tokens per expert, shape)
    copy_bytes: tuple[int, ...]
    op_sizes: tuple[int, ...]  # tokens for router / permute / unpermute / activation
    op_model: tuple[int, int, int, int] = (1024, 2048, 8, 2)  # hidden, ffn, experts, top_k
    # the reference layer's expert FFNs: (hidden, ffn, experts, top_k) x tokens
    ffn_models: tuple[tuple[int, int, int, int], ...] = ()
    ffn_tokens: tuple[int, ...] = ()
    a2a_world_sizes: tuple[int, ...] = (2,)
    a2a_bytes: tuple[int, ...] = ()
    a2a_uneven_bytes: tuple[int, ...] = ()
    a2a_hidden: int = 256
    a2a_dtype: str = "bf16"
    bench: BenchConfig = QUICK
    gemm_passes: int = 2  # dense GEMM sweeps at different times; each point keeps the quietest
    ops_per_sample: int = 100
    notes: dict = field(default_factory=dict)
    caps_s: dict = field(default_factory=lambda: dict(QUICK_CAPS_S))  # section -> seconds

    def gemm_points(self, dtype: str):
        """(shape, M) pairs to measure, skipping those above the FLOP budget."""
        return [(s, m) for s in self.gemm_shapes for m in self.tokens
                if 2.0 * m * s.k * s.n <= self.max_gemm_flops or m == 1]


def _pow2_bytes(lo: int, hi: int, step: int) -> tuple[int, ...]:
    out, b = [], lo
    while b <= hi:
        out.append(b)
        b *= step
    return tuple(out)


def make_plan(device_type: str, quick: bool, dtypes: tuple[str, ...],
              a2a_world_sizes: tuple[int, ...] | None = None,
              budget_s: float | None = None) -> Plan:
    """The default plan for a device type (``cpu`` or ``cuda``) and mode; ``budget_s`` rescales
    the section time caps to that total (default: 170 s quick, ~38 min full)."""
    cpu = device_type == "cpu"
    small = [s for name, (h, f) in SMALL_SHAPES.items() for s in expert_shapes(h, f, True, name)]
    if quick:
        shapes = preset_shapes(QUICK_PRESETS)
        tokens = token_grid(1024 if cpu else 16384)
        max_flops = 4e9 if cpu else 2e12
        grouped_shapes = small[:2]
        grouped = tuple((8, m, s) for s in grouped_shapes for m in (1, 8, 64))
        copy_bytes = (64 * MiB, 256 * MiB) if cpu else (256 * MiB, 1024 * MiB)
        op_sizes = (1, 16, 128, 1024)
        a2a = _pow2_bytes(KiB, 16 * MiB if cpu else 256 * MiB, 2)
        uneven = (64 * KiB, 1 * MiB, 16 * MiB)
        bench = QUICK
    else:
        shapes = preset_shapes(None)
        tokens = token_grid(16384)
        max_flops = 6e10 if cpu else 2e13
        grouped = tuple((e, m, s) for s in small + shapes[:4] for e in (4, 8, 16)
                        for m in (1, 4, 16, 64, 256))
        copy_bytes = (16 * MiB, 64 * MiB, 256 * MiB, 1024 * MiB)
        op_sizes = (1, 4, 16, 64, 256, 1024, 4096)
        a2a = _pow2_bytes(KiB, 256 * MiB, 2)
        uneven = (16 * KiB, 256 * KiB, 4 * MiB, 64 * MiB)
        bench = FULL
    if cpu:
        grouped += call_points()
    worlds = a2a_world_sizes or ((2, 4) if cpu else (2,))
    # tokens per expert from 1 to ~1k (routed) and 4 to 4k (shared) on a CPU; GPU shapes of
    # DeepSeek-style fine-grained experts
    if cpu:
        ffn_models = ((512, 384, 12, 3), (384, 768, 24, 2))
        ffn_tokens = (4, 16, 64, 256, 1024, 4096)
    else:
        ffn_models = ((2048, 768, 64, 6), (4096, 1536, 16, 2))
        ffn_tokens = (64, 512, 4096, 16384, 65536)
    return Plan(dtypes=dtypes, gemm_shapes=tuple(shapes), tokens=tuple(tokens),
                max_gemm_flops=max_flops, grouped=grouped, copy_bytes=copy_bytes,
                op_sizes=op_sizes, a2a_world_sizes=worlds, a2a_bytes=a2a,
                a2a_uneven_bytes=uneven, a2a_dtype="bf16", bench=bench,
                ffn_models=ffn_models, ffn_tokens=ffn_tokens,
                gemm_passes=2 if cpu else 1,
                caps_s=scaled_caps(QUICK_CAPS_S if quick else FULL_CAPS_S, budget_s))
