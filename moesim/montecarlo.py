"""Seeded Monte Carlo over routed batches: the distribution of layer time, not just its mean."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moesim.config.run import OVERLAP_CODES
from moesim.core import layer, loads
from moesim.core.placement import Placement
from moesim.result import PredictResult, assemble_outputs


@dataclass(frozen=True)
class MonteCarloSetup:
    """What one config's samples share: the profile ``hw`` and its ``params``, inclusion
    probabilities ``q [experts]``, the placement, copies per token, the config's columns ``sub``
    and its ``rows`` repeated once per sample, and the routing trace's expert ids (``None``
    unless the routing is a trace: then samples are windows of it)."""

    hw: object
    params: layer.DeviceParams
    q: np.ndarray
    place: Placement
    copies: object
    sub: dict
    rows: layer.LayerRows
    trace: np.ndarray | None = None


def montecarlo(expected: PredictResult, row, setup: MonteCarloSetup, samples: int) -> PredictResult:
    """Re-evaluate the config ``row`` on ``samples`` sampled batches (seed = the run's seed).

    Each sample draws every device's (token, expert) pairs (see ``loads.sampled_loads``), or
    takes a window of the routing trace (``loads.trace_loads``); the
    result's ``time_s`` and breakdown are sample means, ``extra`` holds p50/p99/std.
    """
    hw, q, place, trace = setup.hw, setup.q, setup.place, setup.trace
    rng = np.random.default_rng(int(row["seed"]))
    top_k = int(row["top_k"])

    def evaluate(r: layer.LayerRows, tokens: int):
        args = (place, tokens) + (() if trace is not None else (top_k,)) + (
            samples, rng, row["a2a_kernel"], hw.scale_up.domain_size, setup.copies)
        if trace is not None:
            counts, hit, vol, imbalance = loads.trace_loads(trace, *args)
        else:
            counts, hit, vol, imbalance = loads.sampled_loads(q, *args)
        rate = np.zeros(samples)
        if bool(row["drop_tokens"]):
            counts, vol, rate = loads.apply_capacity(
                q, place, np.full(samples, float(tokens)), counts, vol,
                float(row["capacity_factor"]), top_k, sampled=True)
        costs = layer.phase_costs(setup.params, r, place.slot_device, place.num_devices,
                                  counts, hit, vol, row["a2a_kernel"])
        costs["drop_rate"] = rate
        return costs, imbalance

    rows = setup.rows
    overlap = np.full(samples, OVERLAP_CODES[row["overlap"]])
    costs, imbalance = evaluate(rows, int(row["tokens"]))
    half = None
    if overlap[0] == 2:
        half = evaluate(rows.subset(overlap == 2, 0.5), max(1, int(row["tokens"]) // 2))[0]["phases"]
    out = assemble_outputs(costs, overlap, half, rows, setup.sub, hw, place, imbalance)
    t = out["time_s"]
    return replace(
        expected, time_s=float(t.mean()),
        tokens_per_s=float(row["tokens"]) * place.num_devices / float(t.mean()),
        breakdown_s={p: float(out[f"{p}_s"].mean()) for p in layer.PHASES},
        load_imbalance=float(out["load_imbalance"].mean()),
        drop_rate=float(out["drop_rate"].mean()),
        extra={"mode": "montecarlo", "samples": samples, "time_p50_s": float(np.percentile(t, 50)),
               "time_p99_s": float(np.percentile(t, 99)), "time_std_s": float(t.std(ddof=1)),
               "expected_time_s": expected.time_s})
