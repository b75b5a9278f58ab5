"""Measured columns beside the predicted ones: the ``mode: measure|both`` hook of scenarios.

``run_scenario_measurements(scenario, table, out_dir)`` measures every row of ``table`` (see
``moesim.measure.runner``) and returns it with, for the layer and each phase of
``moesim.core.layer.PHASES``:

- ``measured_time_s``, ``measured_time_p10_s``, ``measured_time_p90_s``, ``measured_time_iqr_s``
  (median and spread over the repeats of the layer time: from the last rank's first phase to
  the last rank's last phase, see ``ep_bench_worker.combine_ranks``), ``measured_wall_s`` (the
  slowest rank's whole forward from its barrier exit, harness checks included) and
  ``measured_<phase>_s`` with ``_p10_s``/``_p90_s`` (compute phases of the critical rank;
  dispatch/combine the shortest over ranks);
- where the predicted columns exist (``time_s``, ``<phase>_s``, as ``predict_many`` names them):
  ``rel_error_time`` = (predicted - measured) / measured and ``rel_error_<phase>`` (NaN where
  the phase was not measured: dispatch/combine with one rank, absent shared experts);
- ``predicted_band_low_s``/``predicted_band_high_s``/``within_band``: the prediction's error
  band from the calibrated profile's ``fit_quality`` (see :func:`error_band`);
- provenance per row: ``measured_repeats``, ``measured_threads_per_rank``,
  ``measured_ranks_per_core``, ``measured_load_1m``, ``measured_foreign_cpu_frac`` (share of the
  machine's CPU other processes took while the config was timed), ``measured_rank_spread``
  (the busiest rank's median compute over the idlest's), ``measure_key``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moesim.core.layer import PHASES
from moesim.harness.stats import Stats
from moesim.harness.host import usable_cores
from moesim.measure.cases import MeasureSettings, resolve_device
from moesim.measure.runner import measure_rows

#: Where in a calibrated profile's ``fit_quality`` the error of each phase's fit is found:
#: candidate paths, first present wins (``DTYPE``/``IMPL``: the row's GEMM dtype, the profile's
#: expert GEMM implementation). Each ends at an error summary with ``mean_abs_pct`` (held-out
#: points where the calibration held some out).
PHASE_FITS = {
    "router": [("layer_kernel_fixed_costs", "router/DTYPE", "fit_error"), ("router", "DTYPE"),
               ("gemm", "DTYPE", "holdout"), ("gemm", "DTYPE", "in_sample")],
    "permute": [("layer_kernel_fixed_costs", "permute/DTYPE", "fit_error"),
                ("streaming", "permute"), ("streaming", "copy")],
    "dispatch": [("scale_up", "holdout"), ("scale_up", "in_sample")],
    "experts": [("gemm_layer_ffn", "DTYPE", "holdout_layer_experts"), ("grouped_gemm", "IMPL"),
                ("gemm", "DTYPE", "holdout"), ("gemm", "DTYPE", "in_sample")],
    "shared_experts": [("gemm_layer_ffn", "DTYPE", "holdout_layer_shared_experts"),
                       ("gemm", "DTYPE", "holdout"), ("gemm", "DTYPE", "in_sample")],
    "combine": [("scale_up", "holdout"), ("scale_up", "in_sample")],
    "unpermute": [("layer_kernel_fixed_costs", "unpermute/DTYPE", "fit_error"),
                  ("streaming", "unpermute"), ("streaming", "copy")],
}


def summarize(record: dict) -> dict:
    """Measured columns of one worker record (medians and spreads, seconds)."""
    total = Stats.from_samples(record["total_s"])
    wall = Stats.from_samples(record.get("wall_s") or record["total_s"])
    out = {"measured_time_s": total.median_s, "measured_time_p10_s": total.p10_s,
           "measured_time_p90_s": total.p90_s, "measured_time_iqr_s": total.iqr_s,
           "measured_wall_s": wall.median_s}
    for phase in PHASES:
        st = Stats.from_samples(record["phases_s"].get(phase, [0.0]))
        out.update({f"measured_{phase}_s": st.median_s, f"measured_{phase}_p10_s": st.p10_s,
                    f"measured_{phase}_p90_s": st.p90_s})
    ranks = record["ep"]
    medians = record.get("rank_median_s") or [total.median_s]
    out.update({
        "measured_repeats": record["repeats"], "measured_threads_per_rank": record["threads_per_rank"],
        "measured_ranks_per_core": ranks * record["threads_per_rank"] / usable_cores(),
        "measured_load_1m": record.get("load_1m_start"),
        "measured_foreign_cpu_frac": record.get("foreign_cpu_frac", np.nan),
        "measured_rank_spread": max(medians) / min(medians) if min(medians) > 0 else np.nan,
        "measure_key": record["key"],
        "measured_commit": record.get("measured_commit"),
        "measured_device": record.get("device", "cpu"),
    })
    return out


def relative_errors(table: pd.DataFrame) -> pd.DataFrame:
    """``rel_error_time`` and ``rel_error_<phase>`` = (predicted - measured) / measured."""
    out = table.copy()
    if "time_s" in out:
        out["rel_error_time"] = (out["time_s"] - out["measured_time_s"]) / out["measured_time_s"]
    for phase in PHASES:
        pred, meas = f"{phase}_s", f"measured_{phase}_s"
        if pred in out:
            measured = out[meas].where(out[meas] > 0)
            out[f"rel_error_{phase}"] = (out[pred] - measured) / measured
    return out


def phase_residual(fit_quality: dict | None, phase: str, dtype: str, impl: str) -> float:
    """Mean absolute relative error of the calibration fit behind ``phase`` (NaN if none)."""
    for path in PHASE_FITS[phase]:
        node = fit_quality or {}
        for part in path:
            part = part.replace("DTYPE", dtype).replace("IMPL", impl)
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get("mean_abs_pct"), (int, float)):
            return float(node["mean_abs_pct"]) / 100.0
    return float("nan")


def _gemm_dtype(table: pd.DataFrame) -> pd.Series:
    weight = table.get("weight_dtype", pd.Series("bf16", index=table.index))
    if "compute_dtype" not in table:
        return weight
    return table["compute_dtype"].where(table["compute_dtype"].notna(), weight)


def error_band(table: pd.DataFrame, z: float = 2.0) -> pd.DataFrame:
    """``predicted_band_low_s``/``high_s`` = ``time_s`` -/+ ``z * sum_p r_p * <phase>_s``;
    ``within_band``: the measured median lies inside.

    ``r_p`` is the mean absolute relative error of the calibration fit behind phase p
    (:data:`PHASE_FITS`, from the row's profile's ``fit_quality``: held-out GEMM shapes and
    all-to-all sizes, the grouped-GEMM, router and streaming checks). Phases are summed
    linearly: they share one calibration, so their errors are taken as correlated (the
    conservative choice). ``z = 2`` covers ~90 % of Gaussian or Laplace errors. A profile
    without ``fit_quality`` (datasheet) gets no band (NaN), never a zero-width one.
    """
    from moesim.config import load_profile

    out = table.copy()
    half = np.zeros(len(out))
    dtypes = _gemm_dtype(out)
    for (hw, dtype), idx in out.groupby([out["hardware"], dtypes]).groups.items():
        profile = load_profile(hw)
        impl = "grouped" if profile.compute.grouped_gemm else "loop"
        rows = out.index.get_indexer(idx)
        for phase in PHASES:
            if f"{phase}_s" in out:
                r = phase_residual(profile.fit_quality, phase, dtype, impl)
                half[rows] += z * r * out[f"{phase}_s"].to_numpy(dtype=float)[rows]
    out["predicted_band_low_s"] = out["time_s"] - half
    out["predicted_band_high_s"] = out["time_s"] + half
    inside = (out["measured_time_s"] >= out["predicted_band_low_s"]) & \
        (out["measured_time_s"] <= out["predicted_band_high_s"])
    out["within_band"] = inside.astype(object).where(np.isfinite(half), pd.NA)
    return out


def attach(table: pd.DataFrame, keys: list[str], records: dict[str, dict]) -> pd.DataFrame:
    """``table`` (one row per key, same order) with measured columns, errors and the band."""
    measured = pd.DataFrame([summarize(records[k]) for k in keys], index=table.index)
    out = pd.concat([table.drop(columns=[c for c in measured if c in table]), measured], axis=1)
    out = relative_errors(out)
    return error_band(out) if "time_s" in out and "hardware" in out else out


def run_scenario_measurements(scenario, table: pd.DataFrame, out_dir, *,
                              settings: MeasureSettings | None = None, launcher=None,
                              progress=None) -> pd.DataFrame:
    """Measure every config of ``table``; the table comes back with measured columns added.

    ``scenario``: the validated scenario (unused: everything needed is in ``table``);
    ``out_dir``: where the journal ``measure.sqlite`` lives (rerun to resume) and where
    ``measurement.json`` (device, settings, method, load, MAPE) is written. Every new record
    carries the measuring git commit (``measured_commit``, ``measured_commit_dirty``).
    """
    from moesim.fileio import write_json
    from moesim.harness.provenance import git_commit

    settings = settings or MeasureSettings()
    if settings.device is None:  # the kind of device the rows' profiles describe
        settings, warning = resolve_device(settings, list(table.get("hardware", [])))
        if warning:
            (progress or _warn)(f"warning: {warning}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    rows = table.to_dict(orient="records")
    commit, dirty = git_commit()
    keys, records = measure_rows(rows, out_dir, settings, launcher=launcher, progress=progress,
                                 provenance={"measured_commit": commit,
                                             "measured_commit_dirty": dirty})
    out = attach(table, keys, records)
    write_json(Path(out_dir) / "measurement.json", measurement_metadata(out, settings))
    return out


def _warn(message: str) -> None:
    import warnings

    warnings.warn(message, stacklevel=3)


def mape_table(table: pd.DataFrame) -> pd.DataFrame:
    """MAPE (%) of the layer time and of each phase, over all rows and per EP size.

    A phase counts only where it was measured (> 0). ``within_band`` is the share of rows whose
    measured time lies in the predicted band.
    """
    groups = [("all", table)] + [(f"ep={ep}", sub) for ep, sub in table.groupby("ep")]
    rows = []
    for name, sub in groups:
        row = {"rows": len(sub), "time": 100 * sub["rel_error_time"].abs().mean()}
        for phase in PHASES:
            col = f"rel_error_{phase}"
            if col in sub and sub[col].notna().any():
                row[phase] = 100 * sub[col].abs().mean()
        if "within_band" in sub and sub["within_band"].notna().any():
            row["within_band"] = 100 * sub["within_band"].dropna().astype(bool).mean()
        rows.append(pd.Series(row, name=name))
    return pd.DataFrame(rows)


def measurement_metadata(table: pd.DataFrame, settings: MeasureSettings) -> dict:
    """How the measured columns were obtained: device, threads, versions, load, settings."""
    import torch

    from moesim.harness.device import device_facts, plan_for
    from moesim.measure.cases import settings_dict

    measured = table.get("measured_device")
    plan = plan_for(str(measured.iloc[0]) if measured is not None and len(table)
                    else settings.device_type)
    facts = device_facts(torch.device(plan.rank_device(0)))
    facts.pop("torch_threads", None)  # this process's; the workers' are below
    def spread(col):
        v = table[col].astype(float)
        return {"min": float(v.min()), "median": float(v.median()), "max": float(v.max())}
    return {
        "device": facts, "settings": settings_dict(settings),
        "threads_per_rank": sorted({int(t) for t in table["measured_threads_per_rank"]}),
        "launch": "python -m torch.distributed.run --nproc_per_node=EP -m "
                  f"moesim.measure.ep_bench_worker --device {plan.device_type} "
                  f"({plan.backend}, phase timer: {plan.timer}); ep 1 without torchrun",
        "method": METHOD,
        "load_1m_at_config_start": spread("measured_load_1m"),
        "foreign_cpu_frac": spread("measured_foreign_cpu_frac"),
        "mape_percent": mape_table(table).round(2).to_dict(orient="index"),
    }


#: How the measured columns are defined (written into metadata.json).
METHOD = {
    "layer_time": "per repeat, from the last rank's first phase start to the last rank's last "
                  "phase end (one monotonic clock on this host); median over repeats",
    "phases": "compute phases of the rank with the most compute; dispatch/combine: the "
              "shortest over ranks (the exchange, not waiting for stragglers)",
    "routing": "forced: per-token systematic sampling with the cost model's inclusion "
               "probabilities q; placement from moesim.core.placement.build_placement",
    "weights": "each rank rotates through layer copies whose weights exceed 2x the last-level "
               "cache (L3 on CPUs, L2 on GPUs): weights read from DRAM/HBM",
    "allocator": "CPU: glibc M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB: freed memory reused (GPU: "
                 "torch's caching allocator)",
    "ranks": "CPU: 1 torch thread per rank, rank r bound to core r when ranks <= cores (else "
             "the scheduler balances them); GPU: one GPU per rank (cuda:LOCAL_RANK), NCCL, "
             "phases timed between torch.cuda.synchronize calls; gc off while timing",
    "contamination": "configs during which other processes used > max_foreign of the CPU are "
                     "measured again (attempts); the cleanest attempt is kept",
}
