"""Public prediction API: ``predict`` for one config, ``predict_many`` for a DataFrame of them.

``predict_many`` groups rows that share a routing/placement signature (experts, top_k, groups,
ep, placement, routing, seed, a2a kernel, hardware) and evaluates each group with numpy arrays
``[rows, slots]`` / ``[rows, devices]``, so sweeps of 1e5 configs take seconds.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from moesim.config import ConfigError, MODEL_FIELDS, load_model, load_profile
from moesim.config.errors import unknown
from moesim.config.run import OVERLAP_CODES, RUN_FIELDS, validate_run
from moesim.config.specs import parse_routing
from moesim.core import layer, loads, traffic
from moesim.core.placement import Placement
from moesim.groups import distinct_configs, row_groups, run_tasks
from moesim.input_checks import check_run_values as _check_run_values, check_size as _check_size
from moesim.inputs import build_placement, inclusion_probs
from moesim.layer_rows import device_params, layer_rows, map_distinct
from moesim.result import OUTPUT_COLUMNS, PredictResult, assemble_outputs
from moesim.traces.io import load_trace

SIGNATURE = ["hardware", "experts", "top_k", "num_groups", "topk_groups", "ep", "placement",
             "routing", "seed", "a2a_kernel", "a2a_impl", "capacity_factor", "drop_tokens"]
RUN_DEFAULTS = {"ep": 1, "placement": "contiguous", "routing": "uniform", "overlap": "none",
                "a2a_kernel": "per-expert", "a2a_impl": "link", "capacity_factor": 1.0,
                "drop_tokens": False, "seed": 0}
INPUT_FIELDS = ("model", "hardware") + MODEL_FIELDS + RUN_FIELDS


@lru_cache(maxsize=4096)
def _inclusion(spec: str, experts: int, top_k: int, seed: int) -> np.ndarray:
    return inclusion_probs(spec, experts, top_k, seed)


@lru_cache(maxsize=4096)
def _placement(spec: str, experts: int, ep: int, routing_spec: str, top_k: int, seed: int):
    return build_placement(spec, experts, ep, _inclusion(routing_spec, experts, top_k, seed))






def _resolve_models(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Model fields per row: preset + overrides, validated once per unique combination."""
    from moesim.config.model import validate_model

    cols = [c for c in MODEL_FIELDS if c in df.columns]
    names = _objects(df["model"]) if "model" in df.columns else \
        np.full(len(df), "custom", dtype=object)
    given = {c: _objects(df[c]) for c in cols}
    first, inverse = row_groups([names] + list(given.values()))
    dumps = []
    for i in first:
        overrides = {c: _py(v[i]) for c, v in given.items() if not pd.isna(v[i])}
        model = validate_model(overrides) if names[i] == "custom" else \
            load_model(names[i], **overrides)
        dumps.append(model.model_dump())
    out = {}
    for f in dumps[0]:
        values = [d[f] for d in dumps]
        kind = object if any(isinstance(v, str) or v is None for v in values) else None
        out[f] = np.array(values, dtype=kind)[inverse]
    return out


def _objects(column: pd.Series) -> np.ndarray:
    """``column`` as an object array, unboxing each distinct value once (a string column's
    ``to_numpy`` boxes every row)."""
    codes, uniques = column.factorize(use_na_sentinel=False)
    return np.asarray(uniques, dtype=object)[codes]


def _py(value):
    return value.item() if hasattr(value, "item") else value


def _check_columns(df: pd.DataFrame) -> None:
    for col in df.columns:
        if col not in INPUT_FIELDS and col not in OUTPUT_COLUMNS:
            raise ConfigError(unknown("config field", col, INPUT_FIELDS), field=col)
    for col in ("hardware", "tokens"):
        if col not in df.columns:
            raise ConfigError(f"missing required column '{col}'", field=col)


def predict_many(df: pd.DataFrame) -> pd.DataFrame:
    """Evaluate every row (a config) of ``df``; returns ``df`` plus the output columns.

    Columns: ``model`` (preset name/path; 'custom' or absent with all model fields given),
    ``hardware``, ``tokens``; optionally any model field and run field. Whole-model rows
    (``scope: model``) go through ``moesim.predict_many`` (:func:`moesim.serving.predict_many`).
    """
    df = df.reset_index(drop=True).copy()
    _check_columns(df)
    _check_run_values(df, [key for key in RUN_FIELDS if key in df.columns])  # defaults are valid
    for key, value in RUN_DEFAULTS.items():
        if key not in df.columns:
            df[key] = value
    if df.empty:
        return df.assign(**{name: pd.Series(dtype=object if kind == "str" else float)
                            for name, kind in OUTPUT_COLUMNS.items()})
    return _predict_rows(df)


def _predict_rows(df: pd.DataFrame, q: np.ndarray | None = None,
                  place: Placement | None = None) -> pd.DataFrame:
    """predict_many after validation of the run columns; ``q``/``place``, when given, stand for
    every row's routing/placement spec (see :func:`predict`)."""
    columns = _resolve_models(df)
    _check_size(df, columns)
    for key in RUN_FIELDS + ("hardware",):
        numeric = pd.api.types.is_numeric_dtype(df[key]) or pd.api.types.is_bool_dtype(df[key])
        columns[key] = df[key].to_numpy() if numeric else _objects(df[key])
    first, group_of = row_groups([columns[c] for c in SIGNATURE])
    in_order = bool((group_of[1:] >= group_of[:-1]).all())  # a sweep's usual layout
    order = np.arange(len(group_of)) if in_order else np.argsort(group_of, kind="stable")
    bounds = np.searchsorted(group_of[order], np.arange(len(first) + 1))
    ordered = columns if in_order else {c: values[order] for c, values in columns.items()}
    outputs = {name: np.empty(len(df), dtype=object if kind == "str" else float)
               for name, kind in OUTPUT_COLUMNS.items()}
    profiles = {hw: load_profile(hw) for hw in pd.unique(columns["hardware"][first])}

    def evaluate(task: tuple[int, slice]) -> None:
        g, rows = task
        sub = {c: values[rows] for c, values in ordered.items()}
        sig = {c: _py(columns[c][first[g]]) for c in SIGNATURE}
        _evaluate_group(sig, sub, rows, outputs, q, place, profiles)

    run_tasks(evaluate, bounds)
    back = slice(None) if in_order else np.argsort(order)
    for name, values in outputs.items():
        df[name] = values[back]
    return df




def _group_setup(sig: dict, q: np.ndarray | None = None, place: Placement | None = None,
                 profiles: dict | None = None):
    """(profile, ``q``, placement, copies per token) of one signature group; ``q`` and ``place``
    come from the signature's specs unless given; ``profiles`` memoises loaded profiles."""
    profiles = {} if profiles is None else profiles
    if sig["hardware"] not in profiles:
        profiles[sig["hardware"]] = load_profile(sig["hardware"])
    hw = profiles[sig["hardware"]]
    experts, top_k, ep, seed = (int(sig[k]) for k in ("experts", "top_k", "ep", "seed"))
    if place is None and q is not None:
        place = build_placement(sig["placement"], experts, ep, q)
    if q is None:
        q = _inclusion(sig["routing"], experts, top_k, seed)
    if place is None:
        place = _placement(sig["placement"], experts, ep, sig["routing"], top_k, seed)
    copies = traffic.copies_per_token(sig["a2a_kernel"], place, q, top_k, int(sig["num_groups"]),
                                      int(sig["topk_groups"]), hw.scale_up.domain_size,
                                      float(sig["capacity_factor"]))
    return hw, q, place, copies


def _evaluate_group(sig: dict, sub: dict, at: slice, outputs: dict, q_given=None,
                    place_given=None, profiles: dict | None = None) -> None:
    """Outputs of one signature group, whose columns are ``sub``, into ``outputs[...][at]``;
    rows that repeat a config (sweeps often do) are evaluated once."""
    distinct = distinct_configs([v for c, v in sub.items() if c not in sig])
    if distinct is None:
        _evaluate_rows(sig, sub, at, outputs, q_given, place_given, profiles)
        return
    first, inverse = distinct
    part = {name: np.empty(len(first), dtype=values.dtype) for name, values in outputs.items()}
    _evaluate_rows(sig, {c: v[first] for c, v in sub.items()}, slice(None), part, q_given,
                   place_given, profiles)
    for name, values in part.items():
        outputs[name][at] = values[inverse]


def _evaluate_rows(sig: dict, sub: dict, at: slice, outputs: dict, q_given=None,
                   place_given=None, profiles: dict | None = None) -> None:
    """:func:`_evaluate_group` over distinct rows."""
    try:
        hw, q, place, copies = _group_setup(sig, q_given, place_given, profiles)
        rows = layer_rows(sub, hw)
        params = device_params(hw, sig["a2a_impl"])
    except ConfigError as exc:
        where = ", ".join(f"{k}={sig[k]}" for k in ("hardware", "experts", "ep", "placement"))
        raise ConfigError(f"{exc.message} [config: {where}]", field=exc.field, file=exc.file) from None
    domain = hw.scale_up.domain_size

    drop = bool(sig["drop_tokens"])

    def evaluate(r: layer.LayerRows):
        vol = traffic.device_volumes(copies, r.tokens, domain, sig["a2a_kernel"])
        counts, hit, vol, imbalance = loads.expected_loads(q, place, r.tokens, vol)
        drop_rate = np.zeros(len(r.tokens))
        if drop:
            counts, vol, drop_rate = loads.apply_capacity(
                q, place, r.tokens, counts, vol, float(sig["capacity_factor"]), int(sig["top_k"]))
        costs = layer.phase_costs(params, r, place.slot_device, place.num_devices,
                                  counts, hit, vol, sig["a2a_kernel"])
        costs["drop_rate"] = drop_rate
        return costs, imbalance

    overlap = map_distinct(OVERLAP_CODES.get, sub["overlap"]).astype(int)
    costs, imbalance = evaluate(rows)
    two = overlap == 2
    half = evaluate(rows.subset(two, 0.5))[0]["phases"] if two.any() else None
    result = assemble_outputs(costs, overlap, half, rows, sub, hw, place, imbalance)
    for name, values in result.items():
        outputs[name][at] = values


def _split_overrides(overrides: dict) -> tuple[dict, dict]:
    model_kw, run_kw = {}, {}
    for key, value in overrides.items():
        if key in MODEL_FIELDS:
            model_kw[key] = value
        elif key in RUN_FIELDS:
            run_kw[key] = value
        else:
            raise ConfigError(unknown("field", key, MODEL_FIELDS + RUN_FIELDS), field=key)
    return model_kw, run_kw


def predict(model="mixtral-8x7b", hardware="h100-sxm", tokens: int = 1, *, mode: str = "expected",
            samples: int = 200, **overrides) -> PredictResult:
    """Predict one MoE layer's forward pass.

    ``model``: preset name, YAML/config.json path or ``MoEModel``; ``hardware``: profile name or
    path; ``tokens``: tokens per device entering the layer; ``overrides``: any model or run
    field (``ep``, ``placement``, ``routing``, ``overlap``, ``experts``, ``top_k`` ...).
    ``mode='montecarlo'`` samples ``samples`` routed batches and reports mean and p99.
    ``placement`` may also be a ``Placement`` object and ``q`` an array of per-expert inclusion
    probabilities (``sum(q) == top_k``): how placement search evaluates candidates; the result's
    ``config`` then reads ``'explicit'`` for them.
    """
    if mode not in ("expected", "montecarlo"):
        raise ConfigError(f"unknown mode '{mode}'; expected 'expected' or 'montecarlo'", field="mode")
    place = overrides.pop("placement") if isinstance(overrides.get("placement"), Placement) else None
    q = np.asarray(overrides.pop("q"), dtype=float) if "q" in overrides else None
    if place is not None:
        overrides["ep"] = place.num_devices
    model_kw, run_kw = _split_overrides(overrides)
    moe = load_model(model, **model_kw)
    if q is not None and (q.shape != (moe.experts,) or not (np.isfinite(q).all() and q.min() >= 0
                                                             and q.max() <= 1)
                          or abs(q.sum() - moe.top_k) > 1e-6 * moe.top_k):
        raise ConfigError(f"q must have one value in [0, 1] per expert ({moe.experts}) summing to "
                          f"top_k ({moe.top_k})", field="q")
    run = validate_run({"tokens": tokens, **run_kw})
    hw = load_profile(hardware)
    explicit = {k: "explicit" for k, given in (("placement", place), ("routing", q))
                if given is not None}
    row = {**moe.model_dump(exclude={"name", "description", "source"}), **run.model_dump(),
           "model": "custom", "hardware": str(hardware), **explicit}
    frame = _predict_rows(pd.DataFrame([row]), q, place)
    result = PredictResult.from_row(frame.iloc[0], model_name=moe.name, hardware=hw.name)
    if mode == "montecarlo":
        result = _montecarlo(result, frame, samples, q, place)
    return result


def _montecarlo(expected: PredictResult, frame: pd.DataFrame, samples: int, q, place):
    """``predict(mode='montecarlo')``: the one row of ``frame`` over ``samples`` routed batches."""
    from moesim.montecarlo import MonteCarloSetup, montecarlo

    from moesim.config.limits import MAX_PREDICT_CELLS
    from moesim.input_checks import row_cells

    if not isinstance(samples, (int, np.integer)) or isinstance(samples, bool) or samples < 2:
        raise ConfigError(f"samples must be an integer >= 2, got {samples!r}", field="samples")
    most = int(MAX_PREDICT_CELLS // row_cells(frame, frame["experts"])[0])
    if samples > most:
        raise ConfigError(f"{samples:,} samples exceed the limit of {most:,} for this model "
                          "(limits.MAX_PREDICT_CELLS: samples x expert slots)", field="samples")
    row = frame.iloc[0]
    hw, q, place, copies = _group_setup({k: row[k] for k in SIGNATURE}, q, place)
    spec = parse_routing(row["routing"]) if row["routing"] != "explicit" else None
    trace = load_trace(spec.path) if spec is not None and spec.kind == "trace" else None
    sub = {c: np.repeat(frame[c].to_numpy(dtype=object), samples) for c in frame.columns}
    setup = MonteCarloSetup(hw, device_params(hw, row["a2a_impl"]), q, place, copies, sub,
                            layer_rows(sub, hw), trace)
    return montecarlo(expected, row, setup, samples)
