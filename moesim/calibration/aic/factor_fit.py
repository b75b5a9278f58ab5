"""Joint fit of a fused MoE kernel's fixed time and its factor on the dense-GEMM grid.

For each calibration row r (draw d of its routing) moesim prices the experts phase as

    t_r = other_r + c + e L_r + mean_d [launch + act + sum_g max(C_g / f(m_d), M_g)]

(:func:`moesim.calibration.aic.moe.expert_terms`: ``C_g`` the compute time of GEMM g from the
dense grid, ``M_g`` its memory floor, ``m_d`` the padded tokens per hit expert where the model
reads ``f``; ``f`` is linear between :data:`FACTOR_NODES` in log m and flat beyond, as
``Efficiency.at`` reads it; ``L_r`` the experts the GPU holds, ``e`` a fixed time per held
expert: fp8-block kernels pay ~0.3-0.4 us per local expert even when 8 are hit, seen in the
trtllm tables at 1 token as ep grows). ``c``, ``e`` and ``f`` at the nodes are fitted together by bounded least
squares on ``log t_r - log measured_r`` (soft-L1 loss, scale 0.1, so a few rows far off any
roofline cannot drag the fit), with bounds that keep them physical:

- ``0 <= c <= min_r s_r`` with ``s_r = measured_r - other_r``, the measured experts time: a
  fixed time per call cannot exceed the smallest measured experts time of the dtype; likewise
  ``0 <= e <= min_r s_r / L_r``;
- ``FACTOR_MIN <= f <= FACTOR_MAX``.

A bound the optimum sits on is reported (``bound_hits``): the data ask for something the model
cannot be, and the fit says so instead of absorbing it silently.
"""
from __future__ import annotations

import numpy as np

#: tokens per hit expert, padded to 16-row tiles (the model reads the factor there, so >= 16)
FACTOR_NODES = (16.0, 64.0, 256.0, 1024.0, 4096.0)
#: physical range of the factor (assumption): a fused grouped kernel runs within 4x of the
#: dense GEMMs of the same shape either way (faster: it skips per-call quantisation and
#: launches; slower: gather/scatter of rows, per-expert scheduling)
FACTOR_MIN, FACTOR_MAX = 0.25, 4.0
#: weight of the smoothness penalty on log f between adjacent nodes (per unit log-residual)
SMOOTH = 0.05
LOSS_SCALE = 0.1


def factor_at(m, nodes, values) -> np.ndarray:
    """``f(m)``: linear in log m between nodes, flat beyond (``KernelFactor.at``)."""
    return np.interp(np.log(np.maximum(m, 1e-30)), np.log(nodes), values)


def predict_s(terms: dict, fixed_s: float, nodes, values, per_expert_s: float = 0.0) -> np.ndarray:
    """``t_r`` of the module docstring ``[rows]``."""
    f = factor_at(terms["m_padded"], nodes, values)
    per_draw = (terms["launch_s"] + terms["act_s"]
                + np.maximum(terms["up_compute_s"] / f, terms["up_memory_s"])
                + np.maximum(terms["down_compute_s"] / f, terms["down_memory_s"]))
    return (terms["other_s"] + fixed_s + per_expert_s * terms["local_experts"]
            + per_draw.mean(axis=1))


def fixed_upper_s(terms: dict, measured_s: np.ndarray) -> tuple[float, float]:
    """Upper bounds of (fixed time per call, fixed time per held expert)."""
    slack = measured_s - terms["other_s"]
    return (max(float(np.min(slack)), 0.0),
            max(float(np.min(slack / np.maximum(terms["local_experts"], 1.0))), 0.0))


def _nodes_with_rows(m_padded: np.ndarray) -> list[float]:
    """Factor nodes with >= 3 rows within a factor 2 of them (at least the nearest node)."""
    log_m = np.log(m_padded).mean(axis=1)
    keep = [n for n in FACTOR_NODES if (np.abs(log_m - np.log(n)) <= np.log(2.0)).sum() >= 3]
    return keep or [min(FACTOR_NODES, key=lambda n: np.abs(np.log(n) - log_m).min())]


def fit(terms: dict, measured_s: np.ndarray) -> dict:
    """Fixed time, factor nodes and fit quality for one dtype's calibration rows."""
    from scipy.optimize import least_squares

    measured_s = np.asarray(measured_s, dtype=float)
    nodes = _nodes_with_rows(terms["m_padded"])
    c_max, e_max = fixed_upper_s(terms, measured_s)
    c_scale, e_scale = max(c_max, 1e-6), max(e_max, 1e-8)  # unknowns of order 1

    def residuals(p):
        values = p[2:]
        pred = predict_s(terms, p[0] * c_scale, nodes, values, p[1] * e_scale)
        smooth = SMOOTH * np.sqrt(len(measured_s)) * np.diff(np.log(values))
        return np.concatenate([np.log(pred / measured_s), smooth])

    lower = [0.0, 0.0] + [FACTOR_MIN] * len(nodes)
    upper = [c_max / c_scale + 1e-12, e_max / e_scale + 1e-12] + [FACTOR_MAX] * len(nodes)
    start = np.clip([0.25 * c_max / c_scale, 0.25 * e_max / e_scale] + [1.0] * len(nodes),
                    lower, upper)
    sol = least_squares(residuals, start, bounds=(lower, upper), loss="soft_l1",
                        f_scale=LOSS_SCALE)
    fixed_s, per_expert_s, values = sol.x[0] * c_scale, sol.x[1] * e_scale, sol.x[2:]
    pred = predict_s(terms, fixed_s, nodes, values, per_expert_s)
    return {"fixed_s": round(float(fixed_s), 9), "per_expert_s": round(float(per_expert_s), 11),
            "points": [[n, round(float(v), 4)] for n, v in zip(nodes, values)],
            "quality": _quality((fixed_s, per_expert_s), (c_max, e_max), nodes, values, pred,
                                measured_s)}


def _quality(fitted, uppers, nodes, values, pred, measured_s) -> dict:
    hits = []
    for name, x, top in zip(("fixed_s", "per_expert_s"), fitted, uppers):
        if top > 0 and x >= top * (1 - 1e-3):
            hits.append(f"{name} at upper bound")
        if top == 0.0:
            hits.append(f"{name} forced to 0: a measured call is below the model's top-k, permute and finalize")
    for n, v in zip(nodes, values):
        for edge, name in ((FACTOR_MIN, "lower"), (FACTOR_MAX, "upper")):
            if abs(v / edge - 1) < 1e-3:
                hits.append(f"factor at m={n:g} at {name} bound {edge}")
    err = 100.0 * (pred / measured_s - 1.0)
    return {"rows": int(len(measured_s)), "fixed_s_bounds": [0.0, round(uppers[0], 9)],
            "per_expert_s_bounds": [0.0, round(uppers[1], 11)],
            "factor_bounds": [FACTOR_MIN, FACTOR_MAX], "bound_hits": hits,
            "in_sample_mape_pct": round(float(np.mean(np.abs(err))), 2),
            "in_sample_median_ratio": round(float(np.median(pred / measured_s)), 4)}
