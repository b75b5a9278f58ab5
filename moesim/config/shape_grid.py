"""Shape-aware efficiency: a table over GEMM shape (M, N, K) interpolated in log space (pure numpy;
lives beside the profile schema that holds the table, so configs answer their own lookups).

A GEMM ``[M, K] x [K, N]`` reaches a fraction ``eff`` of its ideal (tile- and wave-quantised)
time that depends on all three dimensions, not on M alone: thin N or K leave the tensor cores
waiting on loads, and each dtype runs a different kernel. Measured efficiencies sit on a
rectilinear grid of node values ``m_i, n_j, k_l``; between nodes the table is multilinear in
``(log M, log N, log K)`` on ``log eff``, i.e. piecewise power-law::

    log eff(M, N, K) = sum_corners  w_m * w_n * w_k * log eff[i+a, j+b, l+c]
    w_m = (log M - log m_i) / (log m_{i+1} - log m_i)   (and 1 - w_m for the lower corner)

Outside the grid each coordinate is clamped to the nearest end (flat extrapolation), so a
shape beyond the measured range takes the edge's efficiency. Source: standard multilinear
interpolation (e.g. ``scipy.interpolate.RegularGridInterpolator`` method ``linear``), written
here in numpy so the core stays free of scipy and fully vectorised.
"""
from __future__ import annotations

import numpy as np


def _axis_weights(nodes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower node index and upper weight of each value on one log axis (clamped)."""
    log_nodes = np.log(nodes)
    if log_nodes.size == 1:
        zeros = np.zeros(values.shape, dtype=np.intp)
        return zeros, np.zeros(values.shape)
    q = np.clip(np.log(np.maximum(values, 1e-300)), log_nodes[0], log_nodes[-1])
    low = np.clip(np.searchsorted(log_nodes, q, side="right") - 1, 0, log_nodes.size - 2)
    upper = (q - log_nodes[low]) / (log_nodes[low + 1] - log_nodes[low])
    return low, upper


def interp_log_grid(axes: tuple[np.ndarray, ...], log_values: np.ndarray,
                    points: tuple) -> np.ndarray:
    """Multilinear interpolation of ``log_values`` (shape = axes' lengths) at ``points``.

    ``axes``: increasing positive node coordinates per dimension; ``points``: one array (or
    scalar) per dimension, broadcast together; coordinates are interpolated in log space.
    Returns the interpolated log value with the broadcast shape of ``points``.
    """
    pts = np.broadcast_arrays(*[np.asarray(p, dtype=float) for p in points])
    lows, uppers = zip(*(_axis_weights(np.asarray(a, dtype=float), p) for a, p in zip(axes, pts)))
    out = np.zeros(pts[0].shape)
    for corner in range(1 << len(axes)):
        index, weight = [], np.ones(pts[0].shape)
        for d, (low, upper) in enumerate(zip(lows, uppers)):
            top = (corner >> d) & 1
            size = len(axes[d])
            index.append(np.minimum(low + top, size - 1))
            weight = weight * (upper if top else 1.0 - upper)
        out += weight * log_values[tuple(index)]
    return out


def gemm_grid_efficiency(m_nodes, n_nodes, k_nodes, eff_values: np.ndarray, m, n, k) -> np.ndarray:
    """Efficiency at GEMM shapes ``(m, n, k)`` (broadcast arrays) from a measured grid
    ``eff_values[len(m_nodes), len(n_nodes), len(k_nodes)]`` with values in (0, 1]."""
    log_eff = np.log(np.asarray(eff_values, dtype=float))
    axes = tuple(np.asarray(a, dtype=float) for a in (m_nodes, n_nodes, k_nodes))
    return np.minimum(np.exp(interp_log_grid(axes, log_eff, (m, n, k))), 1.0)
