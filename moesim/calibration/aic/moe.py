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

Routing as the collectors build it (balanced and power-law loads of the measured GPU):
:mod:`.routing`. moesim draws the power law with a fixed seed (:data:`POWER_LAW_DRAWS` draws,
as many as the trtllm collector times per row, the predicted times averaged).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.calibration.aic.dtypes import lookup
from moesim.calibration.aic.routing import balanced_counts, power_law_counts
from moesim.core import layer
from moesim.core.phases import shaped

POWER_LAW_DRAWS = 5
#: kernel sources whose activation is not gated (Relu2, Nemotron-3): two matrices, not three
NON_GATED = ("nongated",)


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
    from moesim.layer_rows import phase_tables

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
            [profile.efficiency.grouped_gemm.fixed(d.key) for d in dt])
        + np.array([profile.efficiency.grouped_gemm.fixed_per_expert(d.key) for d in dt])
        * f("num_experts") / f("moe_ep_size"),
        **phase_tables(profile, act))


def _draw_counts(df: pd.DataFrame, seed: int = 0):
    """Local expert loads ``[rows, local]`` of every draw (rows with one draw repeat it)."""
    draws = [row_counts(r, seed) for r in df.itertuples(index=False)]
    ndraw = max(len(d) for d in draws)
    for i in range(ndraw):
        pick = [d[i % len(d)] for d in draws]
        counts = np.zeros((len(df), max(len(c) for c in pick)))
        for r, c in enumerate(pick):
            counts[r, :len(c)] = c
        yield counts


def predict_rows(df: pd.DataFrame, profile, seed: int = 0) -> pd.DataFrame:
    """Predicted seconds of each ``moe_perf`` row, with the phase split (columns ``*_s``)."""
    from moesim.layer_rows import device_params

    hw = device_params(profile)
    splits = [_phase_split(df, hw, profile, c) for c in _draw_counts(df, seed)]
    cols = ["topk_s", "permute_s", "experts_s", "finalize_s"]
    res = pd.DataFrame(np.mean(splits, axis=0), columns=cols, index=df.index)
    res["predicted_s"] = res[cols].sum(axis=1)
    return res


def expert_terms(df: pd.DataFrame, profile, seed: int = 0) -> dict[str, np.ndarray]:
    """The pieces of each row's experts time without a fused-kernel factor, per draw
    ``[rows, draws]``, so a fit can price any factor ``f(m)`` and fixed time ``c``:

        experts = c + launch_s + act_s + sum_g max(compute_g / f(m_padded), memory_g)

    (g: the gate/up and down GEMMs, :func:`moesim.core.gemm.grouped_gemm`; ``m_padded``: padded
    tokens per hit expert, where the model reads the factor), plus ``other_s`` ``[rows]``:
    top-k, permute and finalize, and ``local_experts`` ``[rows]``: experts held by the GPU."""
    from moesim.core import gemm, phases
    from moesim.layer_rows import device_params

    hw = device_params(profile)
    bare = profile.model_copy(update={"efficiency": profile.efficiency.model_copy(
        update={"grouped_gemm": None})})
    keys = ("launch_s", "act_s", "up_compute_s", "up_memory_s", "down_compute_s",
            "down_memory_s", "m_padded")
    out, other = {k: [] for k in keys}, []
    for counts in _draw_counts(df, seed):
        rows = _rows(df, hw, bare, counts)
        split = _phase_split(df, hw, bare, counts)
        other.append(split[:, 0] + split[:, 1] + split[:, 3])
        load = gemm.DeviceLoad.from_slots(counts, (counts > 0).astype(float),
                                          np.zeros(counts.shape[1], dtype=int), 1, hw.tile_m)
        _, up, down, act_s, _ = phases.routed_experts(hw, rows, load, phases.Streamer(hw, rows))
        vals = (up.launches * hw.launch_overhead_s + down.launches * hw.launch_overhead_s,
                act_s, up.compute_s, up.memory_s, down.compute_s, down.memory_s,
                load.row_tiles * hw.tile_m / np.maximum(load.experts_hit, 1e-12))
        for k, v in zip(keys, vals):
            out[k].append(v[:, 0])
    res = {k: np.stack(v, axis=1) for k, v in out.items()}
    res["other_s"] = np.mean(other, axis=0)
    res["local_experts"] = (df.num_experts / df.moe_ep_size).to_numpy(dtype=float)
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
