"""Expert GEMMs: dense ``[M, k] x [k, n]`` over M, and grouped over all local experts.

Weights rotate through enough sets that their total exceeds twice the last-level cache, as a
layer's distinct experts would. Grouped: ``torch._grouped_mm`` (rows sorted by expert, offsets
``int32 [experts]``) where the device/dtype has it, and the per-expert loop either way.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from moesim.config.dtypes import bytes_per_element
from moesim.harness.microbench.common import Context, torch_dtype
from moesim.harness.microbench.plan import GemmShape
from moesim.harness.records import Record
from moesim.harness.stats import Stats, non_monotone
from moesim.harness.timing import rotation_count


def measure_dense(ctx: Context, dtype: str, shape: GemmShape, tokens: list[int],
                  recheck_passes: int = 2) -> list[Record]:
    """One record per M in ``tokens`` for ``x [M, k] @ w [k, n]`` (M the section budget skips
    has none).

    A point slower than a larger M of the same shape (``non_monotone``) is measured again, up to
    ``recheck_passes`` times; the lower median is kept."""
    td, esize = torch_dtype(dtype), bytes_per_element(dtype)
    w_bytes = shape.k * shape.n * esize
    count = rotation_count(w_bytes, ctx.cache_bytes, max_sets=64)
    weights = ctx.sets(ctx.randn(shape.k, shape.n, dtype=td), count)

    def measure(m: int) -> Stats | None:
        def run() -> Stats:
            xs = ctx.sets(ctx.randn(m, shape.k, dtype=td), count)
            return ctx.bench(lambda pair: pair[0] @ pair[1], list(zip(xs, weights)))
        return ctx.budget.attempt(f"gemm {dtype} {shape.key} m={m}", f"gemm/{dtype}",
                                  2.0 * m * shape.k * shape.n, run)

    measured = [(m, measure(m)) for m in tokens]
    tokens = [m for m, st in measured if st is not None]
    stats = [st for _, st in measured if st is not None]
    for _ in range(recheck_passes):
        suspects = non_monotone(tokens, [s.median_s for s in stats])
        for i in suspects:
            again = measure(tokens[i])
            if again is None:
                continue
            attempts = stats[i].attempts + again.attempts
            stats[i] = replace(min(stats[i], again, key=lambda s: s.median_s), attempts=attempts)
        if not suspects:
            break
    return [Record("gemm", {"dtype": dtype, "m": m, "k": shape.k, "n": shape.n,
                            "source": shape.source, "sets": count,
                            "flops": 2.0 * m * shape.k * shape.n, "weight_bytes": w_bytes,
                            "act_bytes": m * (shape.k + shape.n) * esize}, st)
            for m, st in zip(tokens, stats)]


def _column_major(w: torch.Tensor) -> torch.Tensor:
    """``w [experts, k, n]`` with the same values stored n-major (CUDA kernels want it)."""
    return w.transpose(-2, -1).contiguous().transpose(-2, -1)


def grouped_layout(ctx: Context, dtype: str, k: int, n: int):
    """How ``torch._grouped_mm`` takes the weights here: a function laying out ``[experts, k,
    n]`` (row-major as is, or column-major), or None when the device/dtype has no grouped kernel."""
    if not hasattr(torch, "_grouped_mm"):
        return None
    td = torch_dtype(dtype)
    x = torch.ones(4, k, dtype=td, device=ctx.device)
    offs = torch.tensor([2, 4], dtype=torch.int32, device=ctx.device)
    for layout in (lambda w: w, _column_major):
        try:
            torch._grouped_mm(x, layout(torch.ones(2, k, n, dtype=td, device=ctx.device)),
                              offs=offs)
            return layout
        except (RuntimeError, TypeError, NotImplementedError):
            continue
    return None


def _loop(x: torch.Tensor, w: torch.Tensor, counts: list[int]) -> torch.Tensor:
    out = x.new_empty((x.shape[0], w.shape[2]))
    start = 0
    for e, c in enumerate(counts):
        if c:
            out[start:start + c] = x[start:start + c] @ w[e]
        start += c
    return out


def measure_grouped(ctx: Context, dtype: str, experts: int, m: int,
                    shape: GemmShape) -> list[Record]:
    """``experts`` experts with ``m`` tokens each: grouped kernel (if any) and per-expert loop."""
    td, esize = torch_dtype(dtype), bytes_per_element(dtype)
    w_bytes = experts * shape.k * shape.n * esize
    count = rotation_count(w_bytes, ctx.cache_bytes, max_sets=16)
    ws = ctx.sets(ctx.randn(experts, shape.k, shape.n, dtype=td), count)
    xs = ctx.sets(ctx.randn(experts * m, shape.k, dtype=td), count)
    counts = [m] * experts
    offs = torch.tensor(counts, device=ctx.device).cumsum(0).to(torch.int32)
    params = {"dtype": dtype, "experts": experts, "m": m, "k": shape.k, "n": shape.n,
              "source": shape.source, "sets": count, "weight_bytes": w_bytes,
              "flops": 2.0 * experts * m * shape.k * shape.n}
    out = [Record("grouped_gemm", {**params, "impl": "loop"},
                  ctx.bench(lambda p: _loop(p[0], p[1], counts), list(zip(xs, ws))))]
    layout = grouped_layout(ctx, dtype, shape.k, shape.n)
    if layout is not None:
        wg = [layout(w) for w in ws]
        stats = ctx.bench(lambda p: torch._grouped_mm(p[0], p[1], offs=offs), list(zip(xs, wg)))
        out.append(Record("grouped_gemm", {**params, "impl": "grouped"}, stats))
    return out
