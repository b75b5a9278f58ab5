"""Token-to-expert routing distributions, in expectation and sampled.

A distribution is summarised by ``q[e]``: the probability that one token selects expert ``e``
among its ``top_k`` (so ``sum(q) == top_k`` and ``q <= 1``). Expected counts are ``tokens * q``.
Specs (grammar in :mod:`moesim.config.specs`): ``uniform``, ``zipf:S`` (share of expert of rank r proportional to r**-S, ranks placed on
experts by a seeded permutation), ``lognormal:SIGMA`` (expert shares drawn i.i.d. from a
log-normal with log-scale standard deviation SIGMA, seeded by the run seed; SIGMA = 0 is uniform;
``moesim trace stats`` fits SIGMA to a recorded trace), ``probs:p0,p1,...`` (explicit shares),
``trace:PATH`` (expert ids, one row per token, ``top_k`` columns; ``.npy``, whitespace/comma
text, or a ``moesim trace record`` ``.npz``: all its layers pooled, or one layer with
``trace:PATH.npz@LAYER``, LAYER being the model's decoder-layer index).
Shares are turned into ``q`` by :func:`cap_inclusion`. Pure: a trace's expert ids come in as an
array (``moesim.inputs.inclusion_probs`` reads the file, :func:`moesim.traces.io.load_trace`).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import ndtri

from moesim.config.errors import ConfigError
from moesim.config.specs import Routing, parse_routing


def cap_inclusion(shares: np.ndarray, top_k: int) -> np.ndarray:
    """Per-token inclusion ``q = min(1, c * share)`` with ``c`` set so that ``sum(q) == top_k``.

    A token picks ``top_k`` distinct experts, so no expert can be chosen by more than every
    token; mass above 1 is water-filled onto the others.
    """
    shares = np.asarray(shares, dtype=float)
    shares = shares / shares.sum()
    q = np.zeros_like(shares)
    free = np.ones(shares.shape, dtype=bool)
    budget = float(top_k)
    for _ in range(shares.size):
        if not free.any() or budget <= 0:
            break
        scale = budget / shares[free].sum()
        trial = shares * scale
        over = free & (trial >= 1.0)
        if not over.any():
            q[free] = trial[free]
            break
        q[over] = 1.0
        budget -= over.sum()
        free &= ~over
    return q


def zipf_shares(experts: int, s: float, seed: int = 0) -> np.ndarray:
    """Shares proportional to ``rank**-s``; ranks are placed on experts by a seeded permutation."""
    ranks = np.random.default_rng(seed).permutation(experts) + 1
    return ranks.astype(float) ** -s


def lognormal_shares(experts: int, sigma: float, seed: int = 0) -> np.ndarray:
    """Shares ``exp(sigma * z_e)`` with ``z_e`` i.i.d. standard normal from ``seed`` (scaled by
    the largest, so a large sigma cannot overflow)."""
    log_shares = sigma * np.random.default_rng(seed).standard_normal(experts)
    return np.exp(log_shares - log_shares.max())


def inclusion_probs(routing: Routing | str, experts: int, top_k: int, seed: int = 0,
                    trace_ids: np.ndarray | None = None) -> np.ndarray:
    """``q[e]``: probability that a token selects expert ``e``; ``sum(q) == top_k``.

    A ``trace:`` spec needs the trace's expert ids ``trace_ids [num_tokens, top_k]``.
    """
    if isinstance(routing, str):
        routing = parse_routing(routing)
    if routing.kind == "uniform":
        return np.full(experts, top_k / experts)
    if routing.kind == "zipf":
        return cap_inclusion(zipf_shares(experts, routing.param, seed), top_k)
    if routing.kind == "lognormal":
        return cap_inclusion(lognormal_shares(experts, routing.param, seed), top_k)
    if routing.kind == "probs":
        if len(routing.values) != experts:
            raise ConfigError(f"probs has {len(routing.values)} values; expected one per expert "
                              f"({experts})", field="routing")
        return cap_inclusion(np.array(routing.values), top_k)
    if trace_ids is None:
        raise ValueError("a trace routing needs its expert ids (moesim.inputs reads the file)")
    return trace_inclusion(trace_ids, experts, top_k, routing.path)


def trace_inclusion(ids: np.ndarray, experts: int, top_k: int, source: str = "") -> np.ndarray:
    """``q[e]`` = (rows of ``ids [num_tokens, top_k]`` that hold ``e``) / ``num_tokens``."""
    if ids.shape[1] != top_k or ids.max() >= experts or ids.min() < 0:
        raise ConfigError(f"trace has {ids.shape[1]} columns and ids in [{ids.min()}, {ids.max()}];"
                          f" expected top_k={top_k} columns and ids in [0, {experts - 1}]",
                          file=source or None, field="routing")
    return np.bincount(ids.ravel(), minlength=experts) / ids.shape[0]


@lru_cache(maxsize=64)
def kept_group_counts(per_group: int, num_groups: int, topk_groups: int, top_k: int,
                      tokens: int = 16384, seed: int = 0) -> np.ndarray:
    """P(a kept group supplies k of a token's top_k experts) ``[top_k + 1]``, group-limited routing.

    DeepSeek-V3's rule (``noaux_tc``; DeepSeek-V3 Technical Report sec. 2.1.2 and its
    ``MoEGate``): a group's score is the sum of its two best expert scores, the ``topk_groups``
    best groups are kept, and the token takes the ``top_k`` best experts among the kept groups.
    A kept group is kept because its best experts score high, so the experts spread over the kept
    groups more evenly than a uniform draw from them would (DeepSeek-V3: P(k) = 0.01, 0.26, 0.50,
    0.19, 0.04 for k = 0..4), and not as exactly ``top_k / topk_groups`` per group either. The law
    has no closed form; it is evaluated once per shape on ``tokens`` seeded tokens with
    exchangeable (i.i.d. uniform) scores, the uniform-routing case (the standard error of each
    probability is <= 0.004). Mean: ``top_k / topk_groups``.
    """
    rng = np.random.default_rng(seed)
    scores = rng.random((tokens, num_groups, per_group))
    best_two = np.sort(scores, axis=2)[:, :, -min(2, per_group):].sum(axis=2)
    kept = np.argsort(-best_two, axis=1, kind="stable")[:, :topk_groups]  # [tokens, topk_groups]
    inside = np.take_along_axis(scores, kept[:, :, None], axis=1).reshape(tokens, -1)
    threshold = -np.partition(-inside, top_k - 1, axis=1)[:, top_k - 1:top_k]
    per_kept = (inside >= threshold).reshape(tokens, topk_groups, per_group).sum(axis=2)
    return np.bincount(per_kept.ravel(), minlength=top_k + 1)[:top_k + 1] / per_kept.size


def expected_max_std_normal(n) -> np.ndarray:
    """E[max of n iid N(0,1)], Blom's approximation Phi^-1((n - 0.375) / (n + 0.25)); 0 for n=1."""
    n = np.asarray(n, dtype=float)
    return ndtri((n - 0.375) / (n + 0.25))

