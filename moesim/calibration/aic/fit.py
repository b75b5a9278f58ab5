"""``moesim calibrate --from-aic``: a kernel-family profile from AIConfigurator's tables.

Fitted from the primitive tables: ``gemm_perf`` (launch floor, shape-aware GEMM grid per dtype,
:mod:`.gemm_fit`), DeepEP / NCCL all-to-all tables (latency floor and bandwidth per kernel
family, :mod:`.comm_fit`). The fused-MoE factor (``efficiency.grouped_gemm``) is the one thing
read from ``moe_perf``, and only from :data:`CALIBRATION_SHAPES`; every other shape is held out
for validation (``benchmarks/bench_aic_validation.py``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.calibration.aic import factor_fit, gemm_fit, moe, reader
from moesim.calibration.aic.dtypes import MOESIM_ALIASES, lookup, mapped

#: (hidden, inter, experts, top-k): Mixtral 8x7B, Qwen3-30B-A3B, gpt-oss-120b, DeepSeek-V3
CALIBRATION_SHAPES = ((4096, 14336, 8, 2), (2048, 768, 128, 8), (2880, 2880, 128, 4),
                      (7168, 2048, 256, 8))
TILE_M = 16
TILE_M_NOTE = ("16-row GEMM tiles: chosen (from 8/16/32/64/128) after comparing gemm_perf "
               "left-out errors on h200/b200 trtllm; small-M kernels use narrow tiles or swap-AB")


def is_calibration_shape(df: pd.DataFrame) -> np.ndarray:
    key = list(zip(df.hidden_size, df.inter_size, df.num_experts, df.topk))
    return np.array([k in CALIBRATION_SHAPES for k in key], dtype=bool)


def fused_kernel_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: the fastest kernel the engine offers for it."""
    keys = ["moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts",
            "moe_tp_size", "moe_ep_size", "distribution"]
    gated = ~df.kernel_source.str.contains("|".join(moe.NON_GATED))
    df = df[gated | ~df.duplicated(keys, keep=False)]
    return df.loc[df.groupby(keys, sort=False)["latency"].idxmin()].reset_index(drop=True)


def gemm_section(profile, system, backend, version=None, root=None) -> tuple[dict, dict, dict]:
    """(compute updates, efficiency.gemm, provenance+quality) from ``gemm_perf``."""
    ref = reader.locate(system, "gemm_perf", backend, version, root)
    df, unmapped = mapped(reader.load(ref), "gemm_dtype")
    launch = gemm_fit.launch_floor_s(df)
    tiled = _with_tile(profile, TILE_M)
    grids, quality = gemm_fit.fit_gemm(tiled, df, gemm_fit.dtype_floors_s(df))
    alias = {k: v for k, v in MOESIM_ALIASES.items() if v in grids}
    source = {"bf16": "bfloat16", "fp8": "fp8"}
    for name in ("w4a16_mxfp4", "w4a8_mxfp4_mxfp8", "int4_wo"):
        d = lookup(name)
        if d.grid in grids:
            grids[d.key] = gemm_fit.transfer_grid(tiled, grids[d.grid], source[d.grid], name)
    eff = {"basis": "measured", "grid": grids, "grid_alias": alias,
           "note": (f"AIConfigurator {reader.package_version()} {ref.system}/{backend} "
                    f"{ref.version} gemm_perf: eff = moesim ideal GEMM time (eff=1) / (latency - "
                    f"the dtype's fixed cost per call, fit_quality.gemm.*.fixed_cost_s) at power-of-two m, n, k (median per padded M); fastest kernel per "
                    f"shape; weight-only formats: the grid of the dtype they compute in moved to their own roofline "
                    f"(gemm_fit.transfer_grid)")}
    compute = {"launch_overhead_s": round(launch, 9), "gemm_tile_m": TILE_M}
    return compute, eff, {"gemm": ref.provenance(len(df)), "gemm_quality": quality,
                          "gemm_unmapped": unmapped}


def _with_tile(profile, tile_m: int):
    return profile.model_copy(update={"compute": profile.compute.model_copy(
        update={"gemm_tile_m": tile_m})})


def fit_grouped_factor(profile, moe_df: pd.DataFrame) -> tuple[dict, dict, dict]:
    """``efficiency.grouped_gemm`` from the calibration shapes of ``moe_perf``, per dtype:
    (factor points, fixed times per call and per held expert, fit quality), fitted
    jointly within physical bounds (:mod:`.factor_fit`). ``profile``: the GEMM-calibrated
    profile without a fused-kernel factor."""
    cal = fused_kernel_rows(moe_df[is_calibration_shape(moe_df)])
    terms = moe.expert_terms(cal, profile)
    meas = cal.latency.to_numpy() * 1e-3
    table, fixed, per_expert, quality = {}, {}, {}, {}
    for dtype, idx in cal.groupby("moe_dtype").indices.items():
        key = lookup(dtype).key
        res = factor_fit.fit({k: v[idx] for k, v in terms.items()}, meas[idx])
        table[key], fixed[key], quality[key] = res["points"], res["fixed_s"], res["quality"]
        per_expert[key] = res["per_expert_s"]
    if "bf16" in table:  # dtypes without calibration rows (e.g. int4_wo) take bf16's factor
        table["default"], fixed["default"] = table["bf16"], fixed["bf16"]
        per_expert["default"] = per_expert["bf16"]
    return table, {"fixed_s": fixed, "fixed_per_expert_s": per_expert}, quality


def _kernels_section(kernels: dict, prov: dict) -> dict:
    return {name: {"link": "scale_up", "latency_s": k["latency_s"],
                   "bandwidth_bytes_per_s": k["bandwidth_bytes_per_s"], "basis": "measured",
                   "note": (f"{prov[name]['file']}: alpha-beta fit on {k['rows']} configs "
                            f"(fastest SM setting each); left-out MAPE "
                            f"{k['holdout'].get('mape_pct')} %")}
            for name, k in kernels.items()}


def _with_gemm_table(moe_df: pd.DataFrame, gemm_eff: dict) -> tuple[pd.DataFrame, dict]:
    """(``moe_df`` without the dtypes the fitted GEMM grid lacks, {dtype: rows left out}): the
    fused-MoE factor is a factor on the GEMM grid of the same dtype (e.g. SGLang's
    rtx_pro_6000_server gemm_perf has no fp8_block rows while its moe_perf has)."""
    have = set((gemm_eff.get("grid") or {})) | set(gemm_eff.get("grid_alias") or {})
    if not have or "default" in have:
        return moe_df, {}
    missing = ~moe_df["moe_dtype"].map(lambda d: lookup(d).grid in have)
    left = moe_df.loc[missing, "moe_dtype"].value_counts().to_dict()
    return moe_df.loc[~missing], {str(k): int(v) for k, v in left.items()}


def build_profile(system: str, backend: str, base: str, version: str | None = None,
                  root=None) -> tuple[dict, dict]:
    """(profile document extending ``base``, fit quality) for one system and backend.

    ``version`` pins the ``moe_perf`` engine version (default: the largest table)."""
    from moesim.calibration.aic import comm_fit
    from moesim.config import load_profile
    from moesim.config.hardware import HardwareProfile

    prof = load_profile(base)
    compute, gemm_eff, gprov = gemm_section(prof, system, backend, None, root)
    doc = prof.model_dump(mode="json")
    doc["compute"].update(compute)
    doc["efficiency"]["gemm"] = gemm_eff
    moe_ref = reader.locate(system, "moe_perf", backend, version, root)
    moe_df, moe_unmapped = mapped(reader.load(moe_ref), "moe_dtype")
    moe_df, no_gemm = _with_gemm_table(moe_df, gemm_eff)
    staged = HardwareProfile.model_validate(doc)
    table, fixed, gq = fit_grouped_factor(staged, moe_df)
    counts = {k: v["rows"] for k, v in gq.items()}
    grouped = {"basis": "measured", "by_dtype": table, **fixed, "note": (
        f"{moe_ref.provenance(len(moe_df))['file']}: fixed time per call and per held expert and factor on the "
        f"GEMM grid at padded tokens per hit expert, fitted jointly (bounded least squares in "
        f"log time, calibration.aic.factor_fit) on the four calibration shapes only "
        f"{list(CALIBRATION_SHAPES)} (rows per dtype {counts}); bounds and their hits in "
        f"fit_quality.grouped_gemm")}
    kernels, kprov = comm_fit.fit_comm(system, backend, root)
    out = {"compute": compute, "efficiency": {"gemm": gemm_eff, "grouped_gemm": grouped}}
    default = kernels.get("deepep_normal/dispatch")
    if default:
        out["scale_up"] = {"latency_s": default["latency_s"]}
        out["efficiency"]["scale_up_bandwidth"] = {
            "basis": "measured",
            "value": round(min(default["bandwidth_bytes_per_s"]
                               / prof.scale_up.bandwidth_bytes_per_s, 1.0), 4),
            "note": "DeepEP normal dispatch of this engine (alltoall_kernels): fitted bandwidth "
                    "/ NVLink peak (capped at 1: fp8 dispatch moves half the bf16 bytes)"}
    out["alltoall_kernels"] = _kernels_section(kernels, kprov)
    quality = {"gemm": gprov["gemm_quality"], "grouped_gemm": gq,
               "alltoall": {k: {"in_sample": v["in_sample"], "holdout": v["holdout"]}
                            for k, v in kernels.items()}}
    for table, left in (("gemm_perf", gprov["gemm_unmapped"]), ("moe_perf", moe_unmapped)):
        if left:  # formats moesim has no cost for
            quality[f"{table}_dtypes_left_out"] = left
    if no_gemm:  # moe dtypes whose GEMMs this engine's gemm_perf did not time
        quality["moe_perf_dtypes_without_gemm_table"] = no_gemm
    provenance = {"source": f"AIConfigurator measured database ({reader.PACKAGE} "
                            f"{reader.package_version()}), measured on real GPUs by NVIDIA",
                  "system": system, "backend": backend,
                  "tables": {"gemm_perf": gprov["gemm"],
                             "moe_perf (calibration shapes only)": moe_ref.provenance(
                                 int(is_calibration_shape(moe_df).sum())), **kprov},
                  "gemm_tile_m": TILE_M_NOTE}
    return out, {"fit_quality": quality, "provenance": provenance}
