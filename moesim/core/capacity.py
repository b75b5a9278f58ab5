"""Expert capacity and token dropping (GShard/Switch style) versus dropless routing.

Each expert accepts at most ``C = capacity_factor * T_total * top_k / experts`` tokens per
batch (split over its replicas by their share); assignments beyond ``C`` are dropped and neither
dispatched nor computed. In expectation the processed count of a slot with ``X ~ N(mu, s^2)``
tokens (``mu = T p``, ``s^2 = T p (1 - p)``) is ``E[min(X, C)] = mu - E[(X - C)+]`` with

    E[(X - C)+] = (mu - C) * Phi(z) + s * phi(z),  z = (mu - C) / s.

Sampled counts are simply clipped at ``C``. Source: Lepikhin et al. 2020 (GShard), Fedus et al.
2021 (Switch Transformer), section 2.2 "expert capacity".
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

_SQRT_2PI = np.sqrt(2 * np.pi)


def slot_capacity(capacity_factor, tokens_total, top_k: int, experts: int,
                  slot_share: np.ndarray) -> np.ndarray:
    """Capacity of each slot ``[rows, slots]``."""
    per_expert = np.asarray(capacity_factor, dtype=float).reshape(-1, 1) * \
        np.asarray(tokens_total, dtype=float).reshape(-1, 1) * top_k / experts
    return per_expert * slot_share[None, :]


def expected_excess(mu: np.ndarray, sd: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """E[(X - cap)+] for X ~ N(mu, sd^2); exact ``max(mu - cap, 0)`` where sd == 0."""
    safe = np.where(sd > 0, sd, 1.0)
    z = (mu - cap) / safe
    gauss = (mu - cap) * ndtr(z) + safe * np.exp(-z**2 / 2.0) / _SQRT_2PI  # Phi(z), phi(z)
    return np.where(sd > 0, gauss, np.maximum(mu - cap, 0.0))


def drop_expected(counts: np.ndarray, variance: np.ndarray, cap: np.ndarray):
    """(processed counts, drop rate per row) for expected slot counts ``[rows, slots]``."""
    excess = np.minimum(expected_excess(counts, np.sqrt(variance), cap), counts)
    processed = counts - excess
    return processed, _rate(counts, processed)


def drop_sampled(counts: np.ndarray, cap: np.ndarray):
    """(processed counts, drop rate per row) for sampled integer counts ``[rows, slots]``."""
    processed = np.minimum(counts, np.floor(cap))
    return processed, _rate(counts, processed)


def _rate(counts: np.ndarray, processed: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=1)
    return np.where(total > 0, 1.0 - processed.sum(axis=1) / np.maximum(total, 1e-30), 0.0)
