"""Seeded Monte Carlo over routed batches: the distribution of layer time, not just its mean."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from moesim.config.run import OVERLAP_CODES
from moesim.core import layer, loads, routing
from moesim.result import PredictResult, assemble_outputs


def montecarlo(expected: PredictResult, frame, hw, samples: int) -> PredictResult:
    """Re-evaluate ``frame``'s single config on ``samples`` sampled batches (seed = run seed).

    Each sample draws every device's (token, expert) pairs (see ``loads.sampled_loads``), or
    takes a window of the routing trace (``loads.trace_loads``); the
    result's ``time_s`` and breakdown are sample means, ``extra`` holds p50/p99/std.
    """
    from moesim.config import ConfigError
    from moesim.config.limits import MAX_PREDICT_CELLS
    from moesim.inputs import row_cells
    from moesim.predict import SIGNATURE, _group_setup, _layer_rows, device_params

    if not isinstance(samples, (int, np.integer)) or isinstance(samples, bool) or samples < 2:
        raise ConfigError(f"samples must be an integer >= 2, got {samples!r}", field="samples")
    most = int(MAX_PREDICT_CELLS // row_cells(frame, frame["experts"])[0])
    if samples > most:
        raise ConfigError(f"{samples:,} samples exceed the limit of {most:,} for this model "
                          "(limits.MAX_PREDICT_CELLS: samples x expert slots)", field="samples")
    row = frame.iloc[0]
    sig = {k: row[k] for k in SIGNATURE}
    hw_, q, place, copies = _group_setup(sig)
    sub = {c: np.repeat(frame[c].to_numpy(dtype=object), samples) for c in frame.columns}
    rows = _layer_rows(sub, hw)
    rng = np.random.default_rng(int(row["seed"]))
    top_k = int(row["top_k"])

    injected = str(row["routing"]).startswith("<injected")
    spec = None if injected else routing.parse_routing(row["routing"])
    trace = routing.load_trace(spec.path) if spec is not None and spec.kind == "trace" else None

    def evaluate(r: layer.LayerRows, tokens: int):
        args = (place, tokens) + (() if trace is not None else (top_k,)) + (
            samples, rng, row["a2a_kernel"], hw.scale_up.domain_size, copies)
        if trace is not None:
            counts, hit, vol, imbalance = loads.trace_loads(trace, *args)
        else:
            counts, hit, vol, imbalance = loads.sampled_loads(q, *args)
        rate = np.zeros(samples)
        if bool(row["drop_tokens"]):
            counts, vol, rate = loads.apply_capacity(
                q, place, np.full(samples, float(tokens)), counts, vol,
                float(row["capacity_factor"]), top_k, sampled=True)
        costs = layer.phase_costs(device_params(hw), r, place.slot_device, place.num_devices,
                                  counts, hit, vol, row["a2a_kernel"])
        costs["drop_rate"] = rate
        return costs, imbalance

    overlap = np.full(samples, OVERLAP_CODES[row["overlap"]])
    costs, imbalance = evaluate(rows, int(row["tokens"]))
    half = None
    if overlap[0] == 2:
        half = evaluate(rows.subset(overlap == 2, 0.5), max(1, int(row["tokens"]) // 2))[0]["phases"]
    out = assemble_outputs(costs, overlap, half, rows, sub, hw, place, imbalance)
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
