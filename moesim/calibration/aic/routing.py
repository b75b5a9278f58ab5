"""Tokens per local expert of the measured GPU, as AIConfigurator's MoE collectors route them.

Read from ``collector/helper.py`` of github.com/ai-dynamo/aiconfigurator (commit 095f58a,
functions ``balanced_logits``, ``sample_power_law``, ``_generate_power_law_distribution``,
``_round_robin_adjust_per_rank``, ``_assign_experts_from_counts``; the round-robin form dates
from PR #876, 2026-04-19, before the trtllm 1.3.0rc20, vllm and sglang tables were collected);
no code copied. The collectors time ``moe.forward`` on EP rank 0, which owns experts
``0 .. E/ep - 1`` (``collector/trtllm/collect_moe.py``: 5 power-law draws per row, averaged).

Power law (``power_law_<alpha>``), per draw:

1. loads ``x_e`` drawn from ``p(x) ~ x^-alpha`` on ``[1, 0.8 T]`` (on ``[0.01, 2]`` when
   ``T k <= E``), scaled to sum ``T k`` and rounded;
2. clamped at ``T`` (a token picks an expert at most once); the overflow, then the rounding
   difference to ``T k``, is spread one token at a time over the ranks in turn (rank 0, 1, ...),
   each step adding to the rank's least loaded expert below ``T`` (first index on ties), or,
   when the rounding overshot, taking from its most loaded expert (first index on ties);
3. the rank with the largest sum (first on ties) is swapped into rank 0.

With every load <= T, the column-major assignment (experts by descending load laid over the
``top_k x T`` table) never gives a token one expert twice, so the kernel routes exactly these
loads. At tiny ``T k`` against many experts most scaled loads round to 0 and step 2 hands the
``T k`` tokens out round-robin: rank 0 gets about ``T k / ep`` experts with one token each.
"""
from __future__ import annotations

import numpy as np


def balanced_counts(tokens: int, experts: int, top_k: int, local: int) -> np.ndarray:
    """Tokens per local expert of rank 0 under the collectors' balanced routing: token i picks
    experts ``(i + j s) mod E`` (``s = ceil(E / k)``, j < k) when ``T >= s``, else
    ``(i s / T + j s) mod E`` (truncated)."""
    stride = -(-experts // top_k)
    i = np.arange(tokens, dtype=float)[:, None]
    j = np.arange(top_k, dtype=float)[None, :]
    if tokens >= stride:
        picks = (i + j * stride) % experts
    else:
        picks = (i * stride / tokens + j * stride) % experts
    counts = np.bincount(picks.astype(np.int64).ravel(), minlength=experts)
    return counts[:local].astype(float)


def _water_fill(values: np.ndarray, steps: int, bound: int) -> np.ndarray:
    """``steps`` single increments, each to the smallest entry below ``bound`` (first index on
    ties), in closed form: raise everything to a level L, then one more to the first entries
    at L. Needs ``steps <= sum(bound - values)``."""
    if steps <= 0:
        return values
    lo, hi = int(values.min()), int(bound)
    while lo < hi:  # largest level whose fill fits in ``steps``
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.maximum(mid - values, 0).sum() <= steps else (lo, mid - 1)
    out = np.maximum(values, lo)
    left = steps - int((out - values).sum())
    at_level = np.flatnonzero(out == lo)[:left]
    out[at_level] += 1
    return out


def _round_robin(per_rank: np.ndarray, steps: int, bound: int) -> np.ndarray:
    """``steps`` increments dealt to ranks 0, 1, ... in turn, skipping full ranks (all local
    loads at ``bound``); within a rank each goes to its least loaded expert (:func:`_water_fill`)."""
    capacity = (bound - per_rank).sum(axis=1)
    steps = min(int(steps), int(capacity.sum()))
    lo, hi = 0, int(capacity.max())
    while lo < hi:  # full passes over the ranks that fit in ``steps``
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(capacity, mid).sum() <= steps else (lo, mid - 1)
    passes = lo
    share = np.minimum(capacity, passes)
    left = steps - int(share.sum())
    share[np.flatnonzero(capacity > passes)[:left]] += 1
    return np.stack([_water_fill(r, int(q), bound) for r, q in zip(per_rank, share)])


def power_law_counts(tokens: int, experts: int, top_k: int, ep: int, alpha: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Tokens per local expert of rank 0 (the most loaded rank) for one draw of the collectors'
    power law (steps 1-3 of the module docstring)."""
    lo, hi = (1.0, tokens * 0.8) if tokens * top_k > experts else (0.01, 2.0)
    a = 1.0 - alpha
    draw = ((hi ** a - lo ** a) * rng.random(experts) + lo ** a) ** (1.0 / a)
    target = tokens * top_k
    counts = np.round(draw / draw.sum() * target).astype(np.int64)
    overflow = int(np.maximum(counts - tokens, 0).sum())
    per_rank = np.minimum(counts, tokens).reshape(ep, experts // ep)
    per_rank = _round_robin(per_rank, overflow, tokens)
    delta = target - int(per_rank.sum())
    if delta > 0:
        per_rank = _round_robin(per_rank, delta, tokens)
    elif delta < 0:  # take from the largest loads: the same fill on negated loads, bound 0
        per_rank = -_round_robin(-per_rank, -delta, 0)
    busiest = int(per_rank.sum(axis=1).argmax())
    per_rank[[0, busiest]] = per_rank[[busiest, 0]]
    return per_rank[0].astype(float)
