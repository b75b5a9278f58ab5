"""Expert capacity and token dropping (GShard/Switch style) versus dropless routing.

Each expert accepts at most ``C = capacity_factor * T_total * top_k / experts`` tokens per
batch (split over its replicas by their share); assignments beyond ``C`` are dropped and neither
dispatched nor computed. A slot's count is ``X ~ Binomial(T_total, p)`` (see
:mod:`moesim.core.counts`); it processes ``min(X, floor(C))``, so the drop rate is

    rate = sum_slots E[(X - floor(C))+] / sum_slots E[X],

with the exact binomial excess of :func:`moesim.core.counts.expected_excess`. Sampled counts are
simply clipped at ``floor(C)``. Source: Lepikhin et al. 2020 (GShard), Fedus et al. 2021 (Switch
Transformer), section 2.2 "expert capacity".
"""
from __future__ import annotations

import numpy as np

from moesim.core.counts import expected_excess


def slot_capacity(capacity_factor, tokens_total, top_k: int, experts: int,
                  slot_share: np.ndarray) -> np.ndarray:
    """Capacity of each slot ``[rows, slots]``."""
    per_expert = np.asarray(capacity_factor, dtype=float).reshape(-1, 1) * \
        np.asarray(tokens_total, dtype=float).reshape(-1, 1) * top_k / experts
    return per_expert * slot_share[None, :]


def drop_rate_expected(tokens_total, slot_probs: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Drop rate per row for slot counts ``Binomial(tokens_total, slot_probs)`` ``[rows]``."""
    n = np.asarray(tokens_total, dtype=float).reshape(-1, 1)
    p = np.broadcast_to(slot_probs, cap.shape)
    excess = expected_excess(n, p, np.floor(cap)).sum(axis=1)
    mean = (n * p).sum(axis=1)
    return np.where(mean > 0, excess / np.maximum(mean, 1e-30), 0.0)


def drop_sampled(counts: np.ndarray, cap: np.ndarray):
    """(processed counts, drop rate per row) for sampled integer counts ``[rows, slots]``."""
    processed = np.minimum(counts, np.floor(cap))
    total = counts.sum(axis=1)
    rate = np.where(total > 0, 1.0 - processed.sum(axis=1) / np.maximum(total, 1e-30), 0.0)
    return processed, rate
