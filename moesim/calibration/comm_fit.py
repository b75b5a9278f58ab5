"""Alpha-beta per link class from all-to-all records.

The cost model (``moesim.core.comm.alltoall``) charges a device
``launch + max(latency_up + intra / bw_up, latency_out + inter / bw_out)`` where intra/inter are
the larger of the bytes it sends and receives over each link class (its own rows excluded); a
collective ends with its slowest rank. So each record gives ``x = max over ranks of max(sent,
received)`` and the fit is ``t = alpha + x / rate`` (relative least squares, ``fit_alpha_beta``);
``latency_s = alpha - launch_s``.

Single-node records fit ``scale_up``. Multi-node records fit ``scale_out`` on their inter-node
bytes (an approximation: the intra-node part runs concurrently and is assumed shorter).
Quality: even-split sizes are fitted with every 4th size held out; the held-out sizes and every
uneven-split record are then predicted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.calibration.fit import (
    AlphaBeta,
    error_summary,
    fit_alpha_beta,
    holdout_mask,
)
from moesim.harness.records import Record


def critical_bytes(rec: Record, link: str) -> float:
    """max over ranks of max(bytes sent, bytes received) over ``link`` (intra | inter)."""
    p = rec.params
    return float(np.max(np.maximum(p[f"send_{link}"], p[f"recv_{link}"])))


@dataclass(frozen=True)
class LinkFit:
    link: str
    world_size: int  # the rank count whose fit is ``fit``
    fit: AlphaBeta
    quality: dict


def _fit_world(recs: list[Record], link: str, every: int) -> tuple[AlphaBeta, dict] | None:
    """Alpha-beta from the even records, with held-out sizes and uneven records predicted."""
    even = [r for r in recs if r.params["pattern"] == "even"]
    x = np.array([critical_bytes(r, link) for r in even])
    if np.unique(x).size < 2:
        return None
    t = np.array([r.stats.median_s for r in even])
    full = fit_alpha_beta(x, t)
    q = {"alpha_s": full.alpha_s, "bytes_per_s": full.rate, "points": len(even),
         "in_sample": error_summary(full.predict(x), t)}
    held = holdout_mask([r.params.get("target_bytes", x_i) for r, x_i in zip(even, x)], every)
    if held.any() and np.unique(x[~held]).size >= 2:
        train = fit_alpha_beta(x[~held], t[~held])
        q["holdout"] = error_summary(train.predict(x[held]), t[held])
    uneven = [r for r in recs if r.params["pattern"] != "even"]
    if uneven:
        xu = np.array([critical_bytes(r, link) for r in uneven])
        q["uneven"] = error_summary(full.predict(xu), [r.stats.median_s for r in uneven])
    return full, q


def fit_link(recs: list[Record], link: str, every: int = 4,
             world_size: int | None = None) -> LinkFit | None:
    """Alpha-beta for ``link`` ('intra' -> scale_up, 'inter' -> scale_out), per rank count.

    The cost model has one latency per link class, but gloo's all-to-all grows with the number
    of peers (and, past one rank per core, with oversubscription), so each rank count is fitted
    on its own (``quality["per_world_size"]``); the profile takes ``world_size`` (default: the
    smallest measured)."""
    mine = [r for r in recs if (r.params["nodes"] > 1) == (link == "inter")
            and critical_bytes(r, link) > 0]
    per_world, fits = {}, {}
    for w in sorted({r.params["world_size"] for r in mine}):
        got = _fit_world([r for r in mine if r.params["world_size"] == w], link, every)
        if got is not None:
            fits[w], per_world[str(w)] = got
    if not fits:
        return None
    chosen = world_size if world_size in fits else min(fits)
    quality = {**per_world[str(chosen)], "world_size": chosen, "per_world_size": per_world}
    return LinkFit(link, chosen, fits[chosen], quality)
