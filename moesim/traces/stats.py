"""Statistics of a routing trace: skew, fitted skew parameters, co-activation and drift.

All functions take ``ids`` ``[num_tokens, num_topk]`` (one layer) and are numpy/scipy only.

* Load imbalance: max / mean of the per-expert token counts (and of per-rank counts for an EP
  size, experts placed contiguously: expert ``e`` on rank ``e // (num_experts / num_ranks)``).
* Popularity: shares of the (token, expert) pairs sorted in decreasing order, their Gini
  coefficient, a Zipf exponent fitted by least squares of log-share on log-rank (experts with a
  zero share are left out), and the log-normal sigma of the shares (the standard deviation of
  their logs: the parameter of the ``lognormal:SIGMA`` routing spec).
* Per-rank loads: for batches of ``batch_tokens`` tokens, each rank's load divided by the
  batch's mean rank load; a log-normal fitted by maximum likelihood (mean and standard deviation
  of the logs; empty ranks left out and counted).
* Co-activation: ``C[i, j]`` = tokens that chose both ``i`` and ``j``; normalised as the lift
  ``C[i, j] / E[i, j]`` with ``E[i, j] = T * k * (k - 1) * n_i * n_j / sum_{a != b} n_a * n_b``
  (``T`` tokens, ``n_i`` tokens on expert ``i``): the pair's share of the ``k * (k - 1)`` ordered
  pairs each token forms, if partners were chosen in proportion to popularity. 1 = chance
  (exact for uniform routing, where ``E = T k (k-1) / (E (E-1))``); diagonal set to 0.
* Drift: the token stream cut into batches of ``batch_tokens`` (the last partial batch dropped);
  per batch, the total-variation distance ``0.5 * sum |p_b - p|`` of its expert shares from the
  whole trace's, their Spearman rank correlation, and the rank correlation with the first
  batch (``spearman_first``: falls over time when popularity moves). ``tv_noise_floor`` is
  the TV that i.i.d. sampling alone gives, ``0.5 * sum sqrt(2 p (1 - p) / (pi n))`` for
  ``n = batch_tokens * num_topk`` pairs (normal approximation to the multinomial,
  distinctness within a token ignored);
  ``tv_excess`` = mean TV / floor, about 1 for a stationary stream.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from moesim.config.errors import ConfigError


def expert_counts(ids: np.ndarray, num_experts: int) -> np.ndarray:
    """Tokens routed to each expert ``[num_experts]``."""
    return np.bincount(np.asarray(ids).ravel(), minlength=num_experts)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 = all equal, (n-1)/n = all on one."""
    x = np.sort(np.asarray(values, dtype=float))
    n, total = x.size, x.sum()
    if n == 0 or total <= 0:
        return 0.0
    return float(2.0 * np.sum(np.arange(1, n + 1) * x) / (n * total) - (n + 1) / n)


def fit_zipf(shares: np.ndarray) -> float:
    """Exponent ``s`` of ``share ~ rank**-s`` by least squares on (log rank, log share)."""
    s = np.sort(np.asarray(shares, dtype=float))[::-1]
    rank = np.arange(1, s.size + 1)
    keep = s > 0
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(np.log(rank[keep]), np.log(s[keep]), 1)[0]
    return float(-slope)


def fit_lognormal(values: np.ndarray) -> dict:
    """Log-normal MLE ``{mu, sigma, zeros}`` of the positive values (zeros left out, counted)."""
    v = np.asarray(values, dtype=float).ravel()
    pos = v[v > 0]
    if pos.size < 2:
        return {"mu": float("nan"), "sigma": float("nan"), "zeros": int(v.size - pos.size)}
    logs = np.log(pos)
    return {"mu": float(logs.mean()), "sigma": float(logs.std()), "zeros": int(v.size - pos.size)}


def popularity(ids: np.ndarray, num_experts: int) -> dict:
    """Imbalance, sorted shares, Gini, fitted Zipf exponent and log-normal sigma of the shares."""
    counts = expert_counts(ids, num_experts)
    shares = counts / max(counts.sum(), 1)
    return {"imbalance": float(counts.max() / max(counts.mean(), 1e-12)),
            "shares_sorted": np.sort(shares)[::-1].tolist(), "gini": gini(counts),
            "zipf_exponent": fit_zipf(shares), "lognormal_sigma": fit_lognormal(shares)["sigma"],
            "unused_experts": int((counts == 0).sum())}


def _batches(ids: np.ndarray, batch_tokens: int) -> np.ndarray:
    """``[num_batches, batch_tokens, num_topk]``; the last partial batch is dropped."""
    if batch_tokens < 1:
        raise ConfigError(f"batch_tokens must be >= 1, got {batch_tokens}", field="batch_tokens")
    n = ids.shape[0] // batch_tokens
    return ids[: n * batch_tokens].reshape(n, batch_tokens, ids.shape[1])


def rank_loads(ids: np.ndarray, num_experts: int, num_ranks: int, batch_tokens: int) -> np.ndarray:
    """(token, expert) pairs per rank and batch ``[num_batches, num_ranks]``; contiguous experts."""
    if num_ranks < 1 or num_experts % num_ranks:
        raise ConfigError(f"EP size {num_ranks} must divide num_experts ({num_experts})",
                          field="ep")
    rank = np.asarray(ids) // (num_experts // num_ranks)
    batches = _batches(rank, batch_tokens)
    out = np.zeros((batches.shape[0], num_ranks))
    for b, batch in enumerate(batches):
        out[b] = np.bincount(batch.ravel(), minlength=num_ranks)
    return out


def rank_load_fit(ids: np.ndarray, num_experts: int, num_ranks: int, batch_tokens: int) -> dict:
    """Log-normal fitted to per-rank loads / batch mean; plus mean and max of per-batch max/mean."""
    loads = rank_loads(ids, num_experts, num_ranks, batch_tokens)
    if loads.shape[0] == 0:
        return {"ep": num_ranks, "batches": 0}
    rel = loads / np.maximum(loads.mean(axis=1, keepdims=True), 1e-12)
    fit = fit_lognormal(rel)
    return {"ep": num_ranks, "batches": int(loads.shape[0]), "sigma": fit["sigma"],
            "mu": fit["mu"], "empty_ranks": fit["zeros"],
            "imbalance_mean": float(rel.max(axis=1).mean()),
            "imbalance_max": float(rel.max(axis=1).max())}


def coactivation(ids: np.ndarray, num_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts ``C [E, E]``, lift ``[E, E]``): tokens choosing both experts, and C over chance."""
    ids = np.asarray(ids, dtype=np.int64)
    e, k = num_experts, ids.shape[1]
    flat = np.zeros(e * e, dtype=np.int64)
    for a in range(k):
        for b in range(a + 1, k):
            flat += np.bincount(ids[:, a] * e + ids[:, b], minlength=e * e)
    c = flat.reshape(e, e)
    c = c + c.T
    n = expert_counts(ids, e).astype(float)
    c[np.arange(e), np.arange(e)] = n.astype(np.int64)
    outer = np.outer(n, n)
    off_diagonal = outer.sum() - np.trace(outer)
    expected = outer * (ids.shape[0] * k * (k - 1) / max(off_diagonal, 1e-12))
    lift = np.divide(c, expected, out=np.zeros((e, e)), where=expected > 0)
    np.fill_diagonal(lift, 0.0)
    return c, lift


def top_pairs(counts: np.ndarray, lift: np.ndarray, n: int = 5) -> list[dict]:
    """The ``n`` most frequent expert pairs ``{experts, tokens, lift}``, by tokens."""
    i, j = np.triu_indices(counts.shape[0], k=1)
    order = np.argsort(-counts[i, j], kind="stable")[:n]
    return [{"experts": [int(i[o]), int(j[o])], "tokens": int(counts[i[o], j[o]]),
             "lift": float(lift[i[o], j[o]])} for o in order if counts[i[o], j[o]] > 0]


def drift(ids: np.ndarray, num_experts: int, batch_tokens: int) -> dict:
    """Per-batch TV distance and Spearman correlation to the overall shares (see module doc)."""
    batches = _batches(np.asarray(ids), batch_tokens)
    overall = expert_counts(ids, num_experts) / max(np.asarray(ids).size, 1)
    n_pairs = batch_tokens * ids.shape[1]
    floor = 0.5 * np.sum(np.sqrt(2.0 * overall * (1.0 - overall) / (np.pi * n_pairs)))
    shares = [expert_counts(batch, num_experts) / batch.size for batch in batches]
    tv = [0.5 * float(np.abs(p - overall).sum()) for p in shares]
    rho = [_spearman(p, overall) for p in shares]
    rho_first = [_spearman(p, shares[0]) for p in shares]
    tv_arr, rho_arr = np.array(tv), np.array(rho)
    mean_tv = float(tv_arr.mean()) if tv else float("nan")
    return {"batch_tokens": batch_tokens, "batches": len(tv), "tv": tv, "spearman": rho,
            "spearman_first": rho_first,
            "tv_mean": mean_tv, "tv_max": float(tv_arr.max()) if tv else float("nan"),
            "tv_noise_floor": float(floor),
            "tv_excess": mean_tv / floor if floor > 0 else float("nan"),
            "spearman_mean": float(np.nanmean(rho_arr)) if np.isfinite(rho_arr).any()
            else float("nan")}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; NaN when either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b)[0])


def default_ep(num_experts: int, limit: int = 8) -> int:
    """The largest EP size <= ``limit`` that divides ``num_experts``."""
    return max(d for d in range(1, min(limit, num_experts) + 1) if num_experts % d == 0)


def layer_stats(ids: np.ndarray, num_experts: int, *, ep: int | None = None,
                batch_tokens: int = 256, pairs: int = 5, matrix: bool = False) -> dict:
    """Every statistic of one layer's ids, JSON-ready; ``matrix`` adds the lift matrix."""
    ids = np.asarray(ids)
    ep = default_ep(num_experts) if ep is None else ep
    pop = popularity(ids, num_experts)
    counts, lift = coactivation(ids, num_experts)
    out = {"num_tokens": int(ids.shape[0]), "num_topk": int(ids.shape[1]),
           "num_experts": int(num_experts), **pop,
           "rank_loads": rank_load_fit(ids, num_experts, ep, batch_tokens),
           "top_pairs": top_pairs(counts, lift, pairs),
           "drift": drift(ids, num_experts, batch_tokens),
           "suggested_routing": [f"zipf:{pop['zipf_exponent']:.3g}",
                                 f"lognormal:{pop['lognormal_sigma']:.3g}"]}
    if matrix:
        out["coactivation_lift"] = lift.round(4).tolist()
    return out


def trace_stats(trace, *, ep: int | None = None, batch_tokens: int = 256, pairs: int = 5,
                matrix: bool = False, layers: list[int] | None = None) -> dict:
    """Statistics of every (or the chosen) layer of a :class:`moesim.traces.io.Trace`."""
    chosen = trace.layers if layers is None else layers
    missing = [layer for layer in chosen if layer not in trace.ids]
    if missing:
        raise ConfigError(f"no layer {missing[0]} in the trace; expected one of {trace.layers}",
                          field="layer")
    meta = trace.metadata
    per_layer = {str(layer): layer_stats(trace.ids[layer], trace.num_experts, ep=ep,
                                         batch_tokens=batch_tokens, pairs=pairs, matrix=matrix)
                 for layer in chosen}
    return {"model": meta.get("model", ""), "num_experts": trace.num_experts,
            "num_topk": trace.num_topk, "num_tokens": trace.num_tokens, "layers": per_layer}
