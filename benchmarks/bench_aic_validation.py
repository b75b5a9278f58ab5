"""Validate calibrated GPU profiles on held-out MoE kernels measured by AIConfigurator.

Run: ``python benchmarks/bench_aic_validation.py --system h200_sxm --backend trtllm``
(needs ``pip install 'moesim[aic]'``). Measured numbers: AIConfigurator's ``moe_perf`` table
(timed on real GPUs by NVIDIA, package ``aiconfigurator-core``); predictions: moesim with the
calibrated profile ``<base>-<backend>`` of the same system and backend (fitted on GEMM and
all-to-all tables, plus the fused-kernel factor on the four calibration shapes only).

Stratified sampling: rows are grouped by (shape kind calibration/validation, dtype,
distribution, ep = 1 or > 1, token bucket <=16 / <=256 / <=2048 / >2048); up to
``--per-stratum`` rows are drawn from each group with a fixed seed, so small groups (fp4, ep 1)
weigh as much as large ones. Writes ``rows.csv``, ``summary.json``, ``summary.md`` and
``report.html`` under ``results/validation-aic-<system>-<backend>/`` and prints the targets.

Known misses, documented, not special-cased (h200 trtllm, after the joint fixed/factor fit):
65 of 2,586 validation rows are measured over 4x above the prediction, which is itself near the
weight-read roofline there: Llama-4-like 5120/8192/16 and /128 top-1 (31 rows, 5-8x above any
roofline), 4096/1024/512 top-10 and 4096/2048/256 top-8 (25), 6144/16384/8 top-2 (7), mostly
with ``moe_tp_size`` 2-8 and a few hundred tokens; the fused-kernel factor cannot reach them
without breaking the calibration shapes. On b200 nvfp4 the factor sits on its upper bound at
m <= 64 (the dense nvfp4 grid is far slower than the fused kernel at small M); weight-only
MXFP4 sits on its lower bound (the kernels run no faster than bf16 would).
"""
from __future__ import annotations

import argparse
import html
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BASES = {"h100_sxm": "h100-sxm", "h200_sxm": "h200-sxm", "b200_sxm": "b200",
         # held-out systems: calibrated and validated first after the last model change
         "a100_sxm": "a100-sxm-80gb", "gb200": "gb200-nvl72", "l40s": "l40s",
         # a held-out system added 2026-12-03: profiled, calibrated and validated once, after
         # every model change of that day
         "rtx_pro_6000_server": "rtx-pro-6000-server", "b60": "arc-pro-b60"}
TOKEN_BINS = [0, 16, 256, 2048, np.inf]
#: moesim's moe_perf model (fixed costs of the fused kernel per call and per held expert, fitted
#: jointly with its factor; local-row permute, the collectors' power-law routing with loads
#: clamped at T and round-robin over ranks, 16-row tiles, weight-only grid transfer) was
#: changed after looking at
#: these backends' validation tables: they are a development set. The other backends were
#: first predicted after the last model change: the held-out set.
DEVELOPMENT_BACKENDS = ("trtllm",)
#: ... on these systems; A100, GB200 and L40S were never looked at while developing it.
DEVELOPMENT_SYSTEMS = ("h100_sxm", "h200_sxm", "b200_sxm")


def stratified(df: pd.DataFrame, per_stratum: int, seed: int) -> pd.DataFrame:
    keys = ["shape_kind", "moe_dtype", "distribution", "ep_gt1", "token_bin"]
    return df.sample(frac=1.0, random_state=seed).groupby(keys, observed=True).head(per_stratum)


def load_rows(system: str, backend: str, per_stratum: int, seed: int):
    from moesim.calibration.aic import fit, reader

    from moesim.calibration.aic.dtypes import mapped

    ref = reader.locate(system, "moe_perf", backend)
    df = fit.fused_kernel_rows(mapped(reader.load(ref), "moe_dtype")[0])
    df["shape_kind"] = np.where(fit.is_calibration_shape(df), "calibration", "validation")
    df["ep_gt1"] = df.moe_ep_size > 1
    df["token_bin"] = pd.cut(df.num_tokens, TOKEN_BINS, labels=["<=16", "<=256", "<=2048", ">2048"])
    return stratified(df, per_stratum, seed), ref, len(df)


def with_gemm_grid(df: pd.DataFrame, profile) -> tuple[pd.DataFrame, dict]:
    """(rows whose dtype the profile's GEMM grid has, {dtype: sampled rows left out}): a dtype
    the engine's gemm_perf never timed has no GEMM cost to compose (calibration.aic.fit leaves
    it out of the fit the same way)."""
    eff = profile.efficiency.gemm
    if eff.grid is None or "default" in eff.grid:
        return df, {}
    from moesim.calibration.aic.dtypes import lookup

    have = set(eff.grid) | set(eff.grid_alias)
    missing = ~df.moe_dtype.map(lambda d: lookup(d).grid in have)
    left = {str(k): int(v) for k, v in df.loc[missing, "moe_dtype"].value_counts().items()}
    if left:
        print(f"left out (no GEMM table for the dtype in this engine's gemm_perf): {left}")
    return df.loc[~missing].copy(), left


def predict(df: pd.DataFrame, profile_name: str) -> pd.DataFrame:
    from moesim.calibration.aic import moe
    from moesim.config import load_profile

    pred = moe.predict_rows(df, load_profile(profile_name))
    out = df.copy()
    out["measured_s"] = df.latency.to_numpy() * 1e-3
    for col in pred.columns:
        out[col] = pred[col].to_numpy()
    out["ratio"] = out.predicted_s / out.measured_s
    out["abs_err_pct"] = 100.0 * (out.ratio - 1.0).abs()
    out["expert_width"] = out.inter_size // out.moe_tp_size
    return out


def summarise(rows: pd.DataFrame) -> dict:
    def stats(g):
        return {"rows": int(len(g)), "mape_pct": round(float(g.abs_err_pct.mean()), 1),
                "median_ratio": round(float(g.ratio.median()), 3),
                "p10_ratio": round(float(g.ratio.quantile(0.1)), 3),
                "p90_ratio": round(float(g.ratio.quantile(0.9)), 3)} if len(g) else {"rows": 0}
    out = {}
    for kind, g in rows.groupby("shape_kind"):
        bal = g[(g.distribution == "balanced") & (g.moe_ep_size == 1)]
        out[kind] = {"all": stats(g), "balanced_ep1": stats(bal),
                     "by_dtype": {k: stats(v) for k, v in g.groupby("moe_dtype")},
                     "by_tokens": {str(k): stats(v) for k, v in g.groupby("token_bin", observed=True)},
                     "by_distribution": {k: stats(v) for k, v in g.groupby("distribution")}}
    return out


def targets(summary: dict, profile, cross: dict | None) -> list[tuple[str, str, str, bool]]:
    val = summary.get("validation", {})
    q = profile.fit_quality or {}
    gemm = [v["holdout"].get("mape_pct", np.nan) for v in q.get("gemm", {}).values()]
    deepep = [v["holdout"].get("mape_pct", np.nan) for k, v in q.get("alltoall", {}).items()
              if k.startswith("deepep")]
    rows = [("moe_perf validation shapes, balanced ep1", "<= 15 %",
             val.get("balanced_ep1", {}).get("mape_pct", np.nan), 15),
            ("moe_perf validation shapes, all rows", "<= 20 %", val.get("all", {}).get("mape_pct", np.nan), 20),
            ("gemm_perf left-out rows (worst dtype)", "<= 10 %", max(gemm) if gemm else np.nan, 10),
            ("DeepEP dispatch/combine left-out (worst)", "<= 20 %", max(deepep) if deepep else np.nan, 20)]
    if cross:
        rows.append((f"cross-system: {cross['profile']} on {cross['system']}", "<= 25 %",
                     cross["all"]["mape_pct"], 25))
    return [(name, goal, f"{v:.1f} %", bool(v <= lim)) for name, goal, v, lim in rows]


def report_html(rows: pd.DataFrame, title: str, table_md: str) -> str:
    import plotly.express as px

    figs = [px.scatter(rows, x="measured_s", y="predicted_s", color="moe_dtype",
                       symbol="shape_kind", log_x=True, log_y=True, hover_data=[
                           "num_tokens", "hidden_size", "inter_size", "num_experts", "topk",
                           "moe_tp_size", "moe_ep_size", "distribution"],
                       title="predicted vs measured (s); diagonal = exact")]
    for col, name in (("token_bin", "token count"), ("moe_dtype", "dtype"),
                      ("expert_width", "expert width (inter / tp)"), ("moe_ep_size", "ep")):
        figs.append(px.box(rows, x=col, y="ratio", color="shape_kind", log_y=True,
                           title=f"predicted / measured by {name}"))
    parts = [f.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False)
             for i, f in enumerate(figs)]
    return (f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><pre>{html.escape(table_md)}</pre>"
            + "".join(parts) + "</body></html>")


ROW_COLUMNS = ["shape_kind", "kernel_source", "moe_dtype", "num_tokens", "hidden_size", "inter_size",
               "topk", "num_experts", "moe_tp_size", "moe_ep_size", "distribution", "token_bin",
               "expert_width", "measured_s", "predicted_s", "topk_s", "permute_s", "experts_s",
               "finalize_s", "ratio"]


def trim_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The committed per-row table: identifying columns and times to 4 significant digits."""
    out = rows[ROW_COLUMNS].copy()
    for col in ROW_COLUMNS[13:]:
        out[col] = out[col].map(lambda v: float(f"{v:.4g}"))
    return out


def write_bands(profile_name: str, summary: dict, results: Path) -> None:
    """Put the validation residuals (error bands) into the calibrated profile's fit_quality:
    per dtype the p10 / median / p90 of predicted / measured on the validation shapes."""
    import yaml

    from moesim.config.hardware import available_profiles

    path = available_profiles()[profile_name]
    text = path.read_text(encoding="utf-8")
    header = [ln for ln in text.splitlines() if ln.startswith("#")]
    doc = yaml.safe_load(text)
    val = summary.get("validation", {})
    bands = {k: {key: v.get(key) for key in ("rows", "mape_pct", "p10_ratio", "median_ratio",
                                             "p90_ratio")}
             for k, v in val.get("by_dtype", {}).items()}
    doc.setdefault("fit_quality", {})["moe_perf_validation"] = {
        "source": str(results.relative_to(ROOT) if results.is_relative_to(ROOT) else results),
        "all": val.get("all"), "by_dtype": bands,
        "note": "error band of the experts-region prediction: predicted / measured quantiles "
                "on held-out moe_perf shapes (never fitted on)"}
    from moesim.calibration.profile_writer import render
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(render(doc, [h.lstrip("# ") for h in header]), encoding="utf-8")
    tmp.replace(path)


def _git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", default="h200_sxm", choices=sorted(BASES))
    ap.add_argument("--backend", default="trtllm", choices=["trtllm", "vllm", "sglang"])
    ap.add_argument("--per-stratum", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cross-from", help="also predict these rows with SYSTEM's profile "
                                         "(same backend), e.g. h100_sxm")
    ap.add_argument("--profile", help="predict with this profile instead of the calibrated "
                                      "<base>-<backend> (e.g. the datasheet h200-sxm); its "
                                      "fit_quality is left alone")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from moesim.calibration.aic import reader
    from moesim.config import load_profile

    name = args.profile or f"{BASES[args.system]}-{args.backend}"
    rows, ref, total = load_rows(args.system, args.backend, args.per_stratum, args.seed)
    rows, no_gemm = with_gemm_grid(rows, load_profile(name))
    rows = predict(rows, name)
    summary = summarise(rows)
    cross = None
    if args.cross_from:
        cname = f"{BASES[args.cross_from]}-{args.backend}"
        crows = predict(rows[rows.shape_kind == "validation"], cname)
        cross = {"profile": cname, "system": args.system,
                 "all": summarise(crows).get("validation", {}).get("all", {})}
    checks = targets(summary, load_profile(name), cross)
    lines = ["| target | goal | moesim | met |", "|---|---|---|---|"]
    lines += [f"| {n} | {g} | {v} | {'yes' if ok else 'NO'} |" for n, g, v, ok in checks]
    for kind in ("calibration", "validation"):
        s = summary.get(kind, {})
        lines.append(f"\n{kind} shapes: all {s.get('all')}\n  balanced ep1 {s.get('balanced_ep1')}")
        for dt, st in s.get("by_dtype", {}).items():
            lines.append(f"  {dt:<18} {st}")
    table_md = "\n".join(lines)
    print(table_md)
    suffix = f"-profile-{args.profile}" if args.profile else ""
    out = args.out or ROOT / "results" / f"validation-aic-{args.system}-{args.backend}{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    provenance = {"validation_set": ("development (model changes were chosen after viewing "
                                      "trtllm validation tables)"
                                      if args.backend in DEVELOPMENT_BACKENDS
                                      and args.system in DEVELOPMENT_SYSTEMS else
                                      "held-out (first predicted after the last model change)"),
                  "measured_by": f"NVIDIA AIConfigurator on real GPUs ({reader.PACKAGE} "
                                 f"{reader.package_version()})",
                  "table": ref.provenance(total), "profile": name, "sampled_rows": int(len(rows)),
                  "dtypes_left_out_no_gemm_table": no_gemm,
                  "per_stratum": args.per_stratum, "seed": args.seed,
                  "strata": "shape kind x dtype x distribution x (ep>1) x token bucket",
                  "command": "python benchmarks/bench_aic_validation.py " + " ".join(
                      argv if argv is not None else sys.argv[1:]),
                  "moesim_commit": _git_commit(), "python": platform.python_version(),
                  "date": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")}
    trim_rows(rows).to_csv(out / "rows.csv", index=False)
    doc = {"provenance": provenance, "summary": summary, "cross_system": cross,
           "targets": [dict(zip(("target", "goal", "moesim", "met"), c)) for c in checks]}
    (out / "summary.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "summary.md").write_text(table_md + "\n")
    (out / "report.html").write_text(report_html(rows, f"moesim vs AIConfigurator moe_perf: "
                                                       f"{args.system} {args.backend}", table_md))
    if not args.profile:
        write_bands(name, summary, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
