"""moesim's prediction of one AIConfigurator ``moe_perf`` row (the same timed region).

What a row times (AIConfigurator's MoE collectors, e.g. ``collector/trtllm/collect_moe.py``,
read for this module, no code copied): one GPU runs the engine's fused MoE op on its local
experts (``num_experts / moe_ep_size`` experts of width ``inter_size / moe_tp_size``);
``num_tokens`` tokens enter with router logits given; the region is top-k over the logits,
permute, both grouped GEMMs with the activation, and the weighted unpermute (finalize); no
router GEMM, no all-to-all; CUDA graphs. moesim composes it from its layer phases:

    t = router(score + top-k only) + permute + experts + unpermute

(permute and finalize over the rows of the GPU's own experts only: with ``moe_ep_size`` > 1 the
other GPUs' rows are never gathered here).

Routing as the collectors build it (``collector/helper.py``):
- ``balanced``: token i picks experts ``(i + j * s) mod E`` (``s = ceil(E / k)``, j < k) when
  ``T >= s``, else ``(i * s / T + j * s) mod E``; the measured GPU owns experts ``0 .. E/ep-1``.
- ``power_law_<alpha>``: per-expert loads drawn from a power law on ``[1, 0.8 T]`` (``[0.01, 2]``
  when ``T k <= E``), scaled to ``T k`` and rounded; the rank with the most tokens is swapped
  to rank 0, the measured one; the loads become a token table and the kernel's top-k of the
  one-hot logits decides the routing (see :func:`_kernel_counts`). moesim draws the same law
  with a fixed seed (:data:`POWER_LAW_DRAWS` draws, the predicted times averaged).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.calibration.aic.dtypes import lookup
from moesim.core import layer
from moesim.core.phases import shaped

POWER_LAW_DRAWS = 4
#: kernel sources whose activation is not gated (Relu2, Nemotron-3): two matrices, not three
NON_GATED = ("nongated",)


def balanced_counts(tokens: int, experts: int, top_k: int, local: int) -> np.ndarray:
    """Tokens per local expert of rank 0 under the collectors' balanced routing."""
    stride = -(-experts // top_k)
    i = np.arange(tokens, dtype=float)[:, None]
    j = np.arange(top_k, dtype=float)[None, :]
    if tokens >= stride:
        picks = (i + j * stride) % experts
    else:
        picks = (i * stride / tokens + j * stride) % experts
    counts = np.bincount(picks.astype(np.int64).ravel() % experts, minlength=experts)
    return counts[:local].astype(float)


def power_law_counts(tokens: int, experts: int, top_k: int, ep: int, alpha: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Tokens per local expert of rank 0 (the most loaded rank), one draw of the collectors'
    law, routed as the kernel sees it: intended loads -> token assignments -> top-k of the
    one-hot logits (:func:`_kernel_counts`)."""
    lo, hi = (1.0, tokens * 0.8) if tokens * top_k > experts else (0.01, 2.0)
    a = 1.0 - alpha
    draw = ((hi ** a - lo ** a) * rng.random(experts) + lo ** a) ** (1.0 / a)
    target = tokens * top_k
    counts = np.round(draw / draw.sum() * target).astype(np.int64)
    delta = int(target - counts.sum())
    order = np.argsort(-counts, kind="stable")
    step = np.arange(abs(delta)) % experts
    # rounding surplus comes off the largest loads (the collectors take it off the smallest,
    # which can go below zero; moesim keeps every load >= 0)
    np.add.at(counts, order[step], 1 if delta > 0 else -1)
    per_rank = counts.reshape(ep, experts // ep).copy()
    busiest = per_rank.sum(1).argmax()
    per_rank[[0, busiest]] = per_rank[[busiest, 0]]
    return _kernel_counts(per_rank.ravel(), tokens, top_k)[: experts // ep]


def _kernel_counts(counts: np.ndarray, tokens: int, top_k: int) -> np.ndarray:
    """Loads the fused kernel routes: experts in descending load are laid out over the
    ``top_k x tokens`` assignment table (token i gets column i); a token holding an expert
    twice has fewer than k distinct experts, and top-k over its one-hot logits fills the rest
    with zero-logit experts, assumed the lowest indices (ties)."""
    experts = counts.size
    order = np.argsort(-counts, kind="stable")
    table = np.repeat(order, counts[order]).reshape(top_k, tokens).T
    table = np.sort(table, axis=1)
    dup = np.zeros_like(table, dtype=bool)
    dup[:, 1:] = table[:, 1:] == table[:, :-1]
    out = np.bincount(table[~dup], minlength=experts).astype(float)
    missing = dup.sum(axis=1)
    if missing.any():
        cand = np.arange(2 * top_k)[None, :]
        free = ~(table[:, :, None] == cand[:, None, :]).any(axis=1)
        take = free & (np.cumsum(free, axis=1) <= missing[:, None])
        out[: 2 * top_k] += take.sum(axis=0)
    return out


def row_counts(row, seed: int = 0) -> list[np.ndarray]:
    """Per-draw local expert loads ``[local]`` for one table row."""
    t, e, k, ep = int(row.num_tokens), int(row.num_experts), int(row.topk), int(row.moe_ep_size)
    if row.distribution == "balanced":
        return [balanced_counts(t, e, k, e // ep)]
    alpha = float(str(row.distribution).rsplit("_", 1)[1])
    rng = np.random.default_rng(seed + t * 7919 + e * 31 + k)
    return [power_law_counts(t, e, k, ep, alpha, rng) for _ in range(POWER_LAW_DRAWS)]


def _rows(df: pd.DataFrame, hw, profile, counts: np.ndarray) -> layer.LayerRows:
    """Layer rows of the measured GPU. Its permute and finalize move only the rows of its own
    experts (``counts.sum()`` of the ``T k`` copies): ``top_k`` is set to that share per token."""
    from moesim.predict import _phase_tables

    n = len(df)
    local_k = counts.sum(axis=1) / np.maximum(df.num_tokens.to_numpy(float), 1.0)
    dt = [lookup(d) for d in df.moe_dtype]
    act = np.array(["bf16"] * n, dtype=object)
    gated = ~df.kernel_source.str.contains("|".join(NON_GATED)).to_numpy()
    f = lambda c: df[c].to_numpy(dtype=float)  # noqa: E731
    return layer.LayerRows(
        tokens=f("num_tokens"), hidden=f("hidden_size"), expert_ffn=f("inter_size") / f("moe_tp_size"),
        shared_ffn=np.zeros(n), matrices=np.where(gated, 3.0, 2.0), top_k=local_k,
        experts=f("num_experts"), weight_bytes_per_param=np.array([d.weight_bytes for d in dt]),
        act_bytes=np.array([d.act_bytes for d in dt]), dispatch_bytes_per_copy=np.zeros(n),
        combine_bytes_per_copy=np.zeros(n),
        peak_gemm_flops_per_s=np.array([profile.peak_flops_per_s(d.peak) for d in dt]),
        peak_router_flops_per_s=np.full(n, profile.peak_flops_per_s("bf16")),
        gemm_dtype=np.array([d.key for d in dt], dtype=object), act_dtype=act,
        gemm_curve=profile.efficiency.gemm, grouped_curve=profile.efficiency.grouped_gemm,
        expert_fixed_s=None if profile.efficiency.grouped_gemm is None else np.array(
            [profile.efficiency.grouped_gemm.fixed(d.key) for d in dt]),
        **_phase_tables(profile, act))


def predict_rows(df: pd.DataFrame, profile, seed: int = 0) -> pd.DataFrame:
    """Predicted seconds of each ``moe_perf`` row, with the phase split (columns ``*_s``)."""
    from moesim.predict import device_params

    hw = device_params(profile)
    draws = [row_counts(r, seed) for r in df.itertuples(index=False)]
    out = np.zeros((len(df), 4))
    ndraw = max(len(d) for d in draws)
    for i in range(ndraw):
        pick = [d[i % len(d)] for d in draws]
        width = max(len(c) for c in pick)
        counts = np.zeros((len(df), width))
        for r, c in enumerate(pick):
            counts[r, :len(c)] = c
        out += _phase_split(df, hw, profile, counts) / ndraw
    cols = ["topk_s", "permute_s", "experts_s", "finalize_s"]
    res = pd.DataFrame(out, columns=cols, index=df.index)
    res["predicted_s"] = res[cols].sum(axis=1)
    return res


def _phase_split(df, hw, profile, counts: np.ndarray) -> np.ndarray:
    rows = _rows(df, hw, profile, counts)
    hit = (counts > 0).astype(float)
    slots = np.zeros(counts.shape[1], dtype=int)
    zeros = np.zeros((len(df), 1))
    volumes = {f"{a}_{b}": zeros for a in ("send", "recv") for b in ("intra", "inter")}
    res = layer.phase_costs(hw, rows, slots, 1, counts, hit, volumes)
    ph = res["phases"]
    h, a = rows.hidden, rows.act_bytes
    gemm_s = layer.dense_gemm(hw, rows.tokens, h, rows.experts, h * rows.experts * a,
                          (h + rows.experts) * a, rows.peak_router_flops_per_s,
                          shaped(rows.router_eff, rows.experts, h)).time_s
    topk = ph["router"] - gemm_s  # the logits are given: no router GEMM
    return np.hstack([topk, ph["permute"], ph["experts"], ph["unpermute"]])
