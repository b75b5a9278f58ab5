"""The reference MoE layer's own phases, timed in place: router, permute, unpermute, and the
expert FFNs (routed experts, shared expert).

Eager frameworks run several ops per phase (score, top-k, normalisation, sort, gather, casts),
so the cost of these phases is best measured on the code path that the measured layers run:
``moesim.measure.MoELayer`` with a ``PhaseTimer``. Each record holds the median seconds of one
phase at one token count, and ``bytes`` = the cost model's byte count for that phase
(``moesim.core.layer``), so calibration fits ``t = fixed + bytes / rate`` in the model's terms.
The calibration shapes (``LAYER_MODEL``, ``Plan.ffn_models``) are not validation shapes.

The expert FFNs (:func:`measure_layer_ffn`) are timed as the layer runs them: the grouped GEMM
(``torch._grouped_mm`` where the device has it), the gated activation and the second GEMM, with
weights read from memory (the layer rotates through copies whose weights exceed the last-level
cache, as ``moesim measure`` does). Dense GEMM microbenchmarks miss what this path adds: the
grouped kernel's per-expert work, the unfused activation's temporaries, cold caches.
"""
from __future__ import annotations

import numpy as np

from moesim.config.dtypes import bytes_per_element
from moesim.harness.microbench.common import Context
from moesim.harness.records import Record
from moesim.harness.stats import Stats

LAYER_PHASES = ("router", "permute", "unpermute")
FFN_PHASES = ("experts", "shared_experts")
#: hidden, ffn, experts, top_k of the calibration layer: a shape no validation scenario uses
LAYER_MODEL = (512, 384, 12, 3)


def phase_bytes(phase: str, tokens: int, hidden: int, experts: int, top_k: int,
                act_bytes: float) -> float:
    """The cost model's streaming bytes of ``phase`` (see ``moesim.core.layer.phase_costs``)."""
    rows = tokens * top_k * hidden * act_bytes
    return {"router": tokens * experts * 4.0 * 2 + tokens * top_k * 8.0,
            "permute": 2.0 * rows,
            "unpermute": rows + tokens * hidden * act_bytes}[phase]


def forwards(ctx: Context, n: int, forward) -> None:
    """``forward(i)`` for i < n; after the first, the section budget checks the n - 1 left
    (``budget.OverBudget`` stops the point there)."""
    for i in range(n):
        start = ctx.budget.clock()
        forward(i)
        if i == 0:
            ctx.sync()
            ctx.budget.check(ctx.budget.clock() - start, n - 1)


def measure_layer_phases(ctx: Context, dtype: str, tokens: int, hidden: int, ffn: int,
                         experts: int, top_k: int) -> list[Record]:
    """Median seconds of each small phase of one ``MoELayer`` forward at ``tokens`` tokens."""
    import torch

    from moesim.config import MoEModel
    from moesim.harness.timing import PhaseTimer
    from moesim.measure import MoELayer, forced_topk_ids

    model = MoEModel(hidden=hidden, expert_ffn=ffn, experts=experts, top_k=top_k,
                     activation_dtype=dtype, weight_dtype=dtype)
    layer = MoELayer(model, dtype=dtype, device=ctx.device, seed=1)
    xs = [ctx.randn(tokens, hidden, dtype=layer.dtype) for _ in range(4)]
    ids = [forced_topk_ids("uniform", experts, top_k, tokens, seed=i) for i in range(4)]
    samples: dict[str, list[float]] = {p: [] for p in LAYER_PHASES}

    def forward(i: int) -> None:
        timer = PhaseTimer(ctx.device)
        layer(xs[i % 4], timer=timer, topk_idx=ids[i % 4])
        if i >= 2:  # warm-up
            for p in LAYER_PHASES:
                samples[p].append(timer.seconds[p])

    with torch.no_grad():
        forwards(ctx, max(11, ctx.config.min_repeats) + 2, forward)
    a = bytes_per_element(dtype)
    base = {"dtype": dtype, "tokens": tokens, "hidden": hidden, "ffn": ffn, "experts": experts,
            "top_k": top_k}
    return [Record(f"layer_{p}", {**base, "bytes": phase_bytes(p, tokens, hidden, experts,
                                                               top_k, a)},
                   Stats.from_samples(np.array(samples[p]))) for p in LAYER_PHASES]


def measure_layer_ffn(ctx: Context, dtype: str, tokens: int, hidden: int, ffn: int,
                      experts: int, top_k: int) -> list[Record]:
    """Median seconds of the routed and the shared expert FFN of one ``MoELayer`` forward at
    ``tokens`` tokens under uniform forced routing (one shared expert of width ``ffn``).

    Records ``layer_experts`` (``counts``: rows per routed expert, from the forced ids, the same
    every repeat) and ``layer_shared_experts`` (``counts = [tokens]``).
    """
    import torch

    from moesim.config import MoEModel
    from moesim.harness.timing import PhaseTimer
    from moesim.measure import MoELayer, forced_topk_ids
    from moesim.measure.layers import layer_copies

    model = MoEModel(hidden=hidden, expert_ffn=ffn, experts=experts, top_k=top_k,
                     shared_experts=1, shared_expert_ffn=ffn,
                     activation_dtype=dtype, weight_dtype=dtype)
    layers = layer_copies(MoELayer(model, dtype=dtype, device=ctx.device, seed=2),
                          int(ctx.cache_bytes))
    xs = [ctx.randn(tokens, hidden, dtype=layers[0].dtype) for _ in range(4)]
    ids = forced_topk_ids("uniform", experts, top_k, tokens, seed=tokens)
    counts = np.bincount(np.asarray(ids).reshape(-1), minlength=experts).tolist()
    samples: dict[str, list[float]] = {p: [] for p in FFN_PHASES}

    def forward(i: int) -> None:
        timer = PhaseTimer(ctx.device)
        layers[i % len(layers)](xs[i % 4], timer=timer, topk_idx=ids)
        if i >= 2:  # warm-up
            for p in FFN_PHASES:
                samples[p].append(timer.seconds[p])

    with torch.no_grad():
        forwards(ctx, max(11, ctx.config.min_repeats) + 2, forward)
    base = {"dtype": dtype, "hidden": hidden, "ffn": ffn, "matrices": model.matrices,
            "tokens": tokens, "experts": experts, "top_k": top_k, "layer_copies": len(layers)}
    return [Record("layer_experts", {**base, "counts": counts},
                   Stats.from_samples(np.array(samples["experts"]))),
            Record("layer_shared_experts", {**base, "counts": [tokens]},
                   Stats.from_samples(np.array(samples["shared_experts"])))]
