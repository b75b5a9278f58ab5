"""Expert offloading: a device cache of experts in front of host memory, per MoE layer (the cache
model; ``moesim.offload`` predicts decode throughput with it).

Experts that do not fit in device memory live in host memory and are copied over the host link
(PCIe, NVLink-C2C) when a decode step needs them. Each MoE layer has its own cache of ``C``
experts. In a decode step of ``B`` tokens, expert ``e`` (per-token inclusion ``q_e``) is needed
with probability ``r_e = 1 - (1 - q_e)**B`` (tokens independent); ``B = 1`` gives ``r = q``.

Policies:

- ``popularity``: the ``C`` experts with the highest ``q`` stay resident. Expected experts to
  fetch per step ``sum_{e not cached} r_e``; for ``B = 1`` the hit rate is
  ``sum_{cached} q_e / top_k``.
- ``lru``: least-recently-used, updated once per step. Che's approximation (Che, Tung, Wang,
  IEEE JSAC 2002) in steps: an expert is resident iff it was needed in the last ``T_C`` steps,
  ``P(resident) = 1 - (1 - r_e)**T_C``, with the characteristic time ``T_C`` solving
  ``sum_e 1 - (1 - r_e)**T_C = C``; misses per step ``sum_e r_e (1 - r_e)**T_C``.

``simulate`` replays a stream of steps (expert ids per token) through either cache, for traces
and to check the closed forms. Hit rate = 1 - fetched / needed, counting distinct experts per
step.

Transfer time of ``n`` experts: ``n * (latency + expert_bytes / (bandwidth * efficiency))``
(one copy per expert, the alpha-beta form of ``moesim.core.comm``).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
from scipy.optimize import brentq

POLICIES = ("lru", "popularity")
OVERLAP = ("sum", "max")


def step_need(q: np.ndarray, tokens: int) -> np.ndarray:
    """P(expert needed in a step of ``tokens`` tokens) ``[experts]``."""
    q = np.clip(np.asarray(q, dtype=float), 0.0, 1.0)
    return -np.expm1(tokens * np.log1p(-np.minimum(q, 1.0 - 1e-15)))


def popularity_misses(q: np.ndarray, cache: int, tokens: int = 1) -> float:
    """Expected experts fetched per step with the ``cache`` most popular experts resident."""
    need = step_need(q, tokens)
    resident = np.argsort(-np.asarray(q, dtype=float), kind="stable")[:max(0, int(cache))]
    return max(0.0, float(need.sum() - need[resident].sum()))


def che_time(need: np.ndarray, cache: int) -> float:
    """Characteristic time ``T_C`` (steps) of an LRU of ``cache`` entries; inf if all fit."""
    live = need[need > 0]
    if cache >= live.size:
        return np.inf
    if cache <= 0:
        return 0.0
    log_keep = np.log1p(-np.minimum(live, 1.0 - 1e-15))
    occupied = lambda t: float((-np.expm1(t * log_keep)).sum()) - cache
    hi = 1.0
    while occupied(hi) < 0:
        hi *= 2.0
    return brentq(occupied, 0.0, hi, xtol=1e-9, rtol=1e-12)


def lru_misses(q: np.ndarray, cache: int, tokens: int = 1) -> float:
    """Expected experts fetched per step by an LRU of ``cache`` experts (Che approximation)."""
    need = step_need(q, tokens)
    t = che_time(need, int(cache))
    if np.isinf(t):
        return 0.0
    return float((need * np.exp(t * np.log1p(-np.minimum(need, 1.0 - 1e-15)))).sum())


def expected_misses(policy: str, q: np.ndarray, cache: int, tokens: int = 1) -> float:
    if policy == "popularity":
        return popularity_misses(q, cache, tokens)
    if policy == "lru":
        return lru_misses(q, cache, tokens)
    from moesim.config.errors import ConfigError, unknown

    raise ConfigError(unknown("cache policy", policy, POLICIES), field="policy")


def simulate(steps: list[np.ndarray], cache: int, policy: str, num_experts: int,
             popular: np.ndarray | None = None) -> tuple[float, float]:
    """(fetched, needed) distinct experts per step, averaged over ``steps`` (each an array of
    expert ids). ``popular``: the resident set for ``popularity`` (default: most frequent in
    ``steps``). The LRU is updated once per step: the step's hits are touched first, then its
    misses loaded, evicting the least recently used. It starts empty; warm-up misses count."""
    cache = max(0, int(cache))
    if policy == "popularity" and popular is None:
        counts = np.bincount(np.concatenate([np.ravel(s) for s in steps]), minlength=num_experts)
        popular = np.argsort(-counts, kind="stable")[:cache]
    resident = set(np.asarray(popular if popular is not None else []).tolist())
    lru: OrderedDict[int, None] = OrderedDict()
    fetched = needed = 0
    for ids in steps:
        want = list(dict.fromkeys(np.ravel(ids).tolist()))
        needed += len(want)
        if policy == "popularity":
            fetched += sum(e not in resident for e in want)
            continue
        misses = [e for e in want if e not in lru]
        for e in want:  # hits are touched first, so loading a miss never evicts them
            if e in lru:
                lru.move_to_end(e)
        for e in misses:
            fetched += 1
            lru[e] = None
            if len(lru) > cache:
                lru.popitem(last=False)
    return fetched / len(steps), needed / len(steps)


def fetch_time_s(experts: float, expert_bytes: float, bandwidth_bytes_per_s: float,
                 efficiency: float, latency_s: float) -> float:
    """Seconds to copy ``experts`` experts (expected, may be fractional) over the host link."""
    return float(experts) * (latency_s + expert_bytes / (bandwidth_bytes_per_s * efficiency))


def decode_step(layer_s: float, rest_s: float, fetched: np.ndarray, per_expert_s: float,
                prefetch_accuracy: float = 0.0, overlap: str = "sum") -> dict[str, float]:
    """Seconds of one decode step, by part (they add up to the step time).

    ``layer_s``: one MoE layer on the device; ``rest_s``: everything else in the step;
    ``fetched[l]``: experts layer ``l`` misses per step; ``per_expert_s``: one expert's copy.
    A prefetcher with accuracy ``a`` copies ``fetched[l]`` guessed experts during the previous
    layer (``layer_s + rest_s / layers``), a fraction ``a`` of them right; the ``(1 - a)`` rest
    are fetched on demand. ``overlap='sum'``: on-demand fetches stall the layer; ``'max'``: they
    overlap its compute, ``max(layer_s, fetch)``.
    """
    fetched = np.asarray(fetched, dtype=float)
    demand = (1.0 - prefetch_accuracy) * fetched * per_expert_s
    prefetch = fetched * per_expert_s if prefetch_accuracy > 0 else np.zeros_like(fetched)
    window = layer_s + rest_s / max(1, fetched.size)
    stall = demand if overlap == "sum" else np.maximum(demand - layer_s, 0.0)
    return {"moe_layers_on_device": layer_s * fetched.size,
            "expert_fetch_stall": float(stall.sum()),
            "prefetch_exposed": float(np.maximum(prefetch - window, 0.0).sum()),
            "attention_and_rest": float(rest_s)}
