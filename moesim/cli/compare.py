"""``moesim compare``: one model on several profiles, side by side, optionally as a report."""
from __future__ import annotations

import argparse
import itertools

from moesim.cli.predict import add_config_args, overrides_from
from moesim.format import human_bytes, human_time

COLUMNS = ("profile", "kind", "tokens", "ep", "time", "tokens/s", "vs first", "bottleneck",
           "memory/device", "fits")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got '{text}'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got '{text}'")
    return values


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare one model across hardware profiles")
    add_config_args(p, multi_hardware=True)
    for action in p._actions:  # compare takes lists: --tokens 1,128 --ep 8,16
        if action.dest in ("tokens", "ep"):
            action.type = _int_list
            action.help = f"{action.help}; comma-separated for several"
            action.default = [action.default] if action.dest == "ep" else action.default
    p.add_argument("--fallback-dtype", dest="fallback_dtype",
                   help="compute dtype for profiles lacking a peak for the model's GEMM dtype "
                        "(e.g. bf16 for fp8 weights on A100)")
    p.add_argument("--report", help="also write an HTML report to this file")
    p.add_argument("--csv", help="also write the table (every column) to this CSV file")
    p.set_defaults(func=run)


def compare_table(args: argparse.Namespace):
    """The predicted table (one row per profile x tokens x ep) and report metadata."""
    import pandas as pd

    from moesim import predict_many
    from moesim.config import MODEL_FIELDS, ConfigError, load_model, load_profile
    from moesim.scenarios.metadata import git_commit

    overrides = overrides_from(args)
    model_kw = {k: v for k, v in overrides.items() if k in MODEL_FIELDS}
    run_kw = {k: v for k, v in overrides.items() if k not in MODEL_FIELDS and k != "ep"}
    model = load_model(args.model, **model_kw)
    fields = {k: getattr(model, k) for k in MODEL_FIELDS}
    names = [h.strip() for h in args.hardware.split(",") if h.strip()]
    profiles = {h: load_profile(h) for h in names}
    for hw, profile in profiles.items():
        if model.gemm_dtype not in profile.compute.peak_flops_per_s and not args.fallback_dtype:
            raise ConfigError(f"profile '{hw}' has no {model.gemm_dtype} peak FLOP/s; expected "
                              "--fallback-dtype bf16 (that profile only) or --compute-dtype",
                              field="hardware")
    rows = []
    for hw, tokens, ep in itertools.product(names, args.tokens, args.ep):
        row = {"model": str(args.model), "hardware": hw, **fields, **run_kw, "tokens": tokens,
               "ep": ep}
        if args.fallback_dtype and model.gemm_dtype not in profiles[hw].compute.peak_flops_per_s:
            row["compute_dtype"] = args.fallback_dtype
        rows.append(row)
    table = predict_many(pd.DataFrame(rows))
    commit, dirty = git_commit()
    from moesim import __version__

    meta = {"moesim_version": __version__, "git_commit": commit, "git_dirty": dirty,
            "command": _command(args, names), "scenario": {
                "name": f"compare {model.name}", "model": model.name, "mode": "predict",
                "description": f"{model.name} on {', '.join(names)}",
                "swept_fields": ["tokens", "ep"]},
            "profiles": {h: {"name": p.name, "kind": p.kind, "digest": p.digest()}
                         for h, p in profiles.items()}}
    return table, meta


def _command(args: argparse.Namespace, names: list[str]) -> str:
    from moesim.predict import RUN_DEFAULTS

    parts = [f"moesim compare --model {args.model} --hardware {','.join(names)}",
             f"--tokens {','.join(map(str, args.tokens))}", f"--ep {','.join(map(str, args.ep))}"]
    parts += [f"--{k.replace('_', '-')} {v}" for k, v in overrides_from(args).items()
              if k != "ep" and v != RUN_DEFAULTS.get(k)]
    return " ".join(parts)


def format_table(table, kinds: dict) -> str:
    """Side-by-side text table; 'vs first' is the first profile's time over this one's."""
    first = table[table["hardware"] == table["hardware"].iloc[0]].set_index(["tokens", "ep"])
    w = max(16, 2 + max(len(str(h)) for h in table["hardware"]))  # names + '*' + a space
    lines = [f"{'profile':<{w}}{'kind':<11}{'tokens':>7}{'ep':>5}{'time':>12}{'tokens/s':>14}"
             f"{'vs first':>9}  {'bottleneck':<22}{'MoE-layer mem/dev':>24}"]
    for key, group in table.groupby(["tokens", "ep"], sort=False):
        for _, r in group.iterrows():
            speed = first.loc[key, "time_s"] / r["time_s"]
            mem = f"{human_bytes(r['moe_memory_bytes_per_device'])} / " \
                  f"{human_bytes(r['memory_capacity_bytes'])}"
            dtype = "*" if isinstance(r.get("compute_dtype"), str) and \
                r["compute_dtype"] != table["compute_dtype"].iloc[0] else ""
            lines.append(f"{r['hardware'] + dtype:<{w}}{kinds[r['hardware']]:<11}{r['tokens']:>7}"
                         f"{r['ep']:>5}{human_time(r['time_s']):>12}{r['tokens_per_s']:>14,.0f}"
                         f"{speed:>8.2f}x  {r['bottleneck']:<22}{mem:>17} "
                         f"{'fits' if r['moe_fits_in_memory'] else 'NO FIT'}")
    lines.append("MoE-layer mem/dev: weights of the MoE layers (routed + shared experts, routers) and "
                 "this layer's buffers; attention, dense layers and KV cache not counted")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    table, meta = compare_table(args)
    kinds = {h: p["kind"] for h, p in meta["profiles"].items()}
    print(format_table(table, kinds))
    if "compute_dtype" in table and args.fallback_dtype:
        print(f"* computes in {args.fallback_dtype} (--fallback-dtype)")
    if args.csv:
        from moesim.fileio import write_csv

        write_csv(args.csv, table)
        print(f"wrote {args.csv}")
    if args.report:
        from moesim.reports import write_report

        write_report(table, args.report, meta)
        print(f"wrote {args.report}")
    return 0
