"""Forced routing: expert ids drawn so that each expert's inclusion probability is predict's ``q``.

One routing definition for predict, measure and calibration: a routing spec (``uniform``,
``zipf:S``, ``lognormal:SIGMA``, ``probs:...``, ``trace:...``) means the inclusion probabilities
``q = moesim.core.routing.inclusion_probs(spec, experts, top_k, seed)`` the cost model uses, and
every measured or calibrated layer draws its ``topk_idx`` with :func:`sample_inclusion_ids`, whose
per-token inclusion probabilities are exactly ``q``. numpy only (no torch), so the cost model and
tests can draw the very ids a measurement replays.
"""
from __future__ import annotations

import numpy as np

#: Token rows sampled per chunk (bounds the ``[chunk, top_k, num_experts]`` comparison array).
_CHUNK_ELEMENTS = 1 << 22


def sample_inclusion_ids(q: np.ndarray, num_tokens: int, top_k: int, seed: int) -> np.ndarray:
    """``topk_idx [num_tokens, num_topk]`` (int64): distinct experts with ``P(e chosen) == q[e]``.

    ``q [num_experts]``: inclusion probabilities, ``sum(q) == top_k``, ``0 <= q <= 1`` (the cost
    model's). Systematic (Madow, 1949) sampling over a fresh random order of the experts per
    token: the experts' ``q`` tile ``[0, top_k)``; one uniform ``u`` picks the experts covering
    ``u, u+1, ..., u+top_k-1``. Each interval is at most 1 long, so the k picks are distinct,
    and expert e is picked with probability exactly ``q[e]``. (Gumbel-top-k on ``q``, i.e.
    sampling without replacement proportionally to ``q``, gives flatter inclusion than ``q`` for
    skewed ``q`` and ``top_k > 1``.) Tokens are independent, so per-expert counts are
    Binomial(num_tokens, q_e), the distribution the cost model's expectations use.
    """
    q = np.asarray(q, dtype=np.float64)
    if (q.ndim != 1 or not np.all(np.isfinite(q)) or np.any(q < 0) or np.any(q > 1 + 1e-9)
            or abs(q.sum() - top_k) > 1e-6):
        raise ValueError(f"q must be 1-D with 0 <= q <= 1 and sum(q) == top_k ({top_k}), "
                         f"got sum {q.sum():.6g}")
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    q = np.minimum(q, 1.0) * (top_k / q.sum())
    rng = np.random.default_rng(seed)
    out = np.empty((num_tokens, top_k), dtype=np.int64)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, q.size * top_k))
    for start in range(0, num_tokens, chunk):
        n = min(chunk, num_tokens - start)
        order = rng.permuted(np.tile(np.arange(q.size), (n, 1)), axis=1)
        cum = np.cumsum(q[order], axis=1)
        points = rng.random((n, 1)) + np.arange(top_k)
        pos = np.minimum((cum[:, None, :] <= points[:, :, None]).sum(axis=2), q.size - 1)
        out[start:start + n] = np.take_along_axis(order, pos, axis=1)
    if top_k > 1 and np.any(np.diff(np.sort(out, axis=1), axis=1) == 0):
        raise ArithmeticError("systematic sampling picked an expert twice (q above 1?)")
    return out


def forced_topk_ids(routing: str, experts: int, top_k: int, num_tokens: int, seed: int,
                    routing_seed: int = 0) -> np.ndarray:
    """``topk_idx [num_tokens, num_topk]`` for a routing spec: predict's ``q`` for
    (``routing``, ``experts``, ``top_k``, ``routing_seed``), sampled with ``seed``."""
    from moesim.core.routing import inclusion_probs

    q = inclusion_probs(routing, experts, top_k, routing_seed)
    return sample_inclusion_ids(q, num_tokens, top_k, seed)


def check_topk_ids(topk_idx: np.ndarray, num_tokens: int, top_k: int, experts: int) -> np.ndarray:
    """Validate forced ids: shape ``[num_tokens, num_topk]``, in range, distinct per token."""
    ids = np.asarray(topk_idx)
    if ids.shape != (num_tokens, top_k):
        raise ValueError(f"forced topk_idx has shape {ids.shape}, expected {(num_tokens, top_k)}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"forced topk_idx must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= experts):
        raise ValueError(f"forced topk_idx must lie in 0..{experts - 1}")
    if top_k > 1 and ids.size and np.any(np.diff(np.sort(ids, axis=1), axis=1) == 0):
        raise ValueError("forced topk_idx repeats an expert within a token")
    return ids.astype(np.int64, copy=False)
