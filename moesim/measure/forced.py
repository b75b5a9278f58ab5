"""Forced routing: expert ids drawn from a given distribution instead of the learned router.

numpy only, so the cost model can draw the very ids that a measurement then replays.
"""
from __future__ import annotations

import numpy as np


def uniform_probs(experts: int) -> np.ndarray:
    """``[num_experts]`` equal probabilities."""
    if experts <= 0:
        raise ValueError(f"experts must be > 0, got {experts}")
    return np.full(experts, 1.0 / experts)


def zipf_probs(experts: int, s: float) -> np.ndarray:
    """``[num_experts]`` Zipf probabilities ``p_i ~ (i + 1) ** -s``; expert 0 is the hottest."""
    if experts <= 0:
        raise ValueError(f"experts must be > 0, got {experts}")
    if s < 0:
        raise ValueError(f"zipf exponent s must be >= 0, got {s}")
    weights = np.arange(1, experts + 1, dtype=np.float64) ** -float(s)
    return weights / weights.sum()


def sample_topk_ids(probs: np.ndarray, num_tokens: int, top_k: int, seed: int) -> np.ndarray:
    """``topk_idx [num_tokens, num_topk]`` (int64): ``top_k`` distinct experts per token.

    Gumbel-top-k: the ``top_k`` largest ``log p + Gumbel`` keys, which is sampling without
    replacement proportionally to ``probs`` (Plackett-Luce). For ``top_k > 1`` an expert's
    inclusion frequency is therefore flatter than ``probs`` (it saturates at one per token).
    Columns are in draw order: column 0 holds each token's first draw.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1 or not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("probs must be a 1-D array of finite, non-negative values")
    if not 0 < top_k <= np.count_nonzero(probs):
        raise ValueError(f"top_k ({top_k}) must be in 1..{np.count_nonzero(probs)} "
                         "(the experts with non-zero probability)")
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        log_p = np.log(probs / probs.sum())
    keys = log_p + rng.gumbel(size=(num_tokens, probs.size))
    top = np.argpartition(-keys, top_k - 1, axis=1)[:, :top_k]
    rank = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
    return np.take_along_axis(top, rank, axis=1).astype(np.int64)


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
