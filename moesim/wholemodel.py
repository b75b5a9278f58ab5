"""Whole-model prediction: prefill TTFT, decode TPOT, tokens/s, memory, serving curves.

``predict_model`` (one config) and ``predict_model_many`` (a DataFrame of them; also reached
through ``predict_many`` with a ``scope`` column equal to ``model``). Each row describes a
deployment of ``devices = tp x dp_attn x pp``: attention and dense layers tensor-parallel over
``tp`` and data-parallel over ``dp_attn`` (DeepSeek-style DP attention), MoE layers expert-
parallel over the ``tp x dp_attn`` devices of a stage (``ep = tp dp_attn / moe_tp``, each
expert split over ``moe_tp``), ``pp`` pipeline stages. ``batch`` counts the sequences of the
whole deployment; with ``pp > 1`` they run as ``pp`` micro-batches:

    prefill  TTFT = (m + pp - 1) stage(batch / m) + (pp - 1) p2p          (GPipe bubble)
    decode   TPOT = pp (stage(batch / m) + p2p);  tokens/s = batch / TPOT

Each MoE layer is the per-layer prediction (``predict_many``: per expert, per device, per
link) at the tokens each device feeds it. Costs per layer kind: ``moesim.core.step``; memory:
``moesim.core.footprint``; parameter counts: ``moesim.core.params``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.config import ConfigError, load_profile
from moesim.config.model_run import (MODEL_RUN_FIELDS, MOE_RUN_FIELDS,  # noqa: F401
                                     RUN_SIZE_FIELDS, ModelRun, validate_model_run)
from moesim.core import footprint, layer, params, step
from moesim.step_rows import as_float, step_rows

OUTPUT_COLUMNS = ("ttft_s", "tpot_s", "step_time_s", "tokens_per_s", "tokens_per_s_per_device",
                  "tokens_per_s_per_node", "devices", "ep",
                  *[f"{k}_s" for k in step.KINDS], "attention_core_s", "pp_bubble_s",
                  "weights_bytes_per_device", "kv_cache_bytes_per_device",
                  "workspace_bytes_per_device", "memory_bytes_per_device",
                  "memory_capacity_bytes", "fits_in_memory", "max_batch", "bottleneck",
                  "moe_bottleneck", "moe_experts_hit", "total_params", "active_params")


def _check_models(cols: dict) -> None:
    """Whole-model prediction needs the architecture fields; encoder-decoders are refused."""
    f = lambda k: np.asarray(cols[k], dtype=float)  # noqa: E731
    lacking = (f("vocab") == 0) | (f("heads") == 0) | ((f("dense_layers") > 0)
                                                       & (f("dense_ffn") == 0))
    if lacking.any():
        i = int(np.argmax(lacking))
        missing = [k for k in ("vocab", "heads") if not cols[k][i]]
        missing += ["dense_ffn"] if cols["dense_layers"][i] and not cols["dense_ffn"][i] else []
        raise ConfigError(f"model '{cols['name'][i]}' lacks the architecture fields whole-model "
                          f"prediction needs: {', '.join(missing)} (set them in the model "
                          "YAML or read a config.json)", field=missing[0])
    cross = f("cross_attention_layers") > 0
    if cross.any():
        raise ConfigError(f"model '{cols['name'][int(np.argmax(cross))]}' is an encoder-decoder "
                          "(cross_attention_layers > 0); whole-model prediction covers "
                          "decoder-only models", field="model")


def predict_model_many(df: pd.DataFrame) -> pd.DataFrame:
    """Whole-model outputs (``OUTPUT_COLUMNS``) for every row of ``df`` (model, hardware, the
    ``ModelRun`` fields, MoE run fields and model-field overrides)."""
    from moesim.predict import _resolve_models

    df = df.reset_index(drop=True).copy()
    if "hardware" not in df.columns:
        raise ConfigError("missing required column 'hardware'", field="hardware")
    defaults = {**ModelRun().model_dump(), "placement": "contiguous", "routing": "uniform",
                "overlap": "none", "a2a_kernel": "per-expert", "a2a_impl": "link",
                "capacity_factor": 1.0, "drop_tokens": False, "seed": 0}
    for key, value in defaults.items():
        if key not in df.columns:
            df[key] = value
        elif value is not None and df[key].isna().any():
            df[key] = df[key].where(df[key].notna(), value).infer_objects()
    for key in MODEL_RUN_FIELDS:  # the fields are independent: each distinct value alone
        for value in pd.unique(df[key]):
            validate_model_run({key: None if pd.isna(value) else _py(value)})
    cols = _resolve_models(df.drop(columns=[c for c in ("scope", "tokens") if c in df.columns]))
    _check_models(cols)
    out = {name: np.full(len(df), np.nan, dtype=object if name in (
        "bottleneck", "moe_bottleneck") else float) for name in OUTPUT_COLUMNS}
    columns = {k: _column(df[k]) for k in MODEL_RUN_FIELDS + MOE_RUN_FIELDS + ("hardware",)}
    for hw_name in pd.unique(columns["hardware"]):
        idx = np.flatnonzero(columns["hardware"] == hw_name)
        sub = {k: v[idx] for k, v in cols.items() if k not in ("description", "source")}
        run = {k: columns[k][idx] for k in MODEL_RUN_FIELDS + MOE_RUN_FIELDS}
        for name, values in _evaluate(load_profile(hw_name), str(hw_name), sub, run).items():
            out[name][idx] = values
    return pd.concat([df.drop(columns=[c for c in out if c in df.columns]),
                      pd.DataFrame(out, index=df.index)], axis=1)


def _column(column: pd.Series) -> np.ndarray:
    """A frame column as numpy: numbers as they are, strings unboxed once per distinct value."""
    from moesim.predict import _objects

    numeric = pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
    return column.to_numpy() if numeric else _objects(column)


def _py(value):
    return value.item() if hasattr(value, "item") else value


def _layout(run: dict) -> dict:
    """Derived deployment numbers ``[rows]``: micro-batches, sequences per attention rank."""
    tp, dp, pp, moe_tp = (as_float(run[k]) for k in ("tp", "dp_attn", "pp", "moe_tp"))
    decode = run["phase"] == "decode"
    micro = np.where(pp > 1, pp, 1.0)
    seqs = as_float(run["batch"]) / micro / dp
    new = np.where(decode, 1.0, as_float(run["prompt_len"]))
    past = np.where(decode, as_float(run["context"]), 0.0)
    return {"tp": tp, "dp": dp, "pp": pp, "moe_tp": moe_tp, "decode": decode, "micro": micro,
            "seqs": seqs, "new": new, "past": past, "ep": tp * dp / moe_tp,
            "moe_tokens": seqs * new / tp * moe_tp}


#: Model fields a MoE layer's prediction reads (architecture fields do not enter it).
MOE_FIELDS = ("hidden", "expert_ffn", "experts", "top_k", "shared_experts", "shared_expert_ffn",
              "gated", "router", "num_groups", "topk_groups", "moe_layers", "dense_layers",
              "weight_dtype", "compute_dtype", "activation_dtype", "dispatch_dtype",
              "combine_dtype")


def _moe_layer(hw_name: str, sub: dict, run: dict, lay: dict) -> pd.DataFrame:
    """One MoE layer per row through ``predict_many`` (distinct rows evaluated once)."""
    from moesim.predict import predict_many

    cols = {f: sub[f] for f in MOE_FIELDS}
    for f in ("expert_ffn", "shared_expert_ffn"):
        split = as_float(cols[f]) / lay["moe_tp"]
        if np.any(split != np.round(split)):
            raise ConfigError(f"moe_tp must divide {f}", field="moe_tp")
        cols[f] = split.astype(int)
    if np.any(lay["ep"] != np.round(lay["ep"])):
        raise ConfigError("moe_tp must divide tp x dp_attn", field="moe_tp")
    cols["tokens"] = np.maximum(np.ceil(lay["moe_tokens"] - 1e-9), 1).astype(int)
    cols["ep"] = lay["ep"].astype(int)
    cols.update({f: run[f] for f in MOE_RUN_FIELDS})
    codes = np.zeros(len(cols["tokens"]), dtype=np.int64)
    for values in cols.values():
        c, u = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
        codes = codes * max(len(u), 1) + c
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    frame = pd.DataFrame({f: np.asarray(v, dtype=object)[first] for f, v in cols.items()})
    frame["model"], frame["hardware"] = "custom", hw_name
    result = predict_many(frame)
    return {"time_s": result["time_s"].to_numpy()[inverse],
            "moe_memory_bytes_per_device": result["moe_memory_bytes_per_device"].to_numpy()[inverse],
            "bottleneck": result["bottleneck"].to_numpy(dtype=object)[inverse],
            "experts_hit": result["experts_hit_per_device"].to_numpy()[inverse],
            "tokens": cols["tokens"]}


def _memory(hw, r: step.StepRows, sub: dict, run: dict, lay: dict, moe) -> dict:
    counts = params.model_params(sub)
    layers = r.full_layers + r.window_layers
    dense_ffn_params = params.ffn_params(r.hidden, r.dense_ffn, params.dense_gated(sub))
    weights = footprint.weights_bytes(
        params.attention_params(sub), dense_ffn_params, as_float(moe["moe_memory_bytes_per_device"])
        * r.moe_layers / np.maximum(r.moe_layers, 1.0), r.vocab, r.hidden, layers,
        r.dense_layers, r.tp, r.pp, np.asarray(sub["tie_embeddings"], bool),
        r.dense_weight_bytes, r.act_bytes, r.embed_bytes)
    context = r.past + r.new
    kv_seq = footprint.kv_bytes_per_seq(r.dims, r.mla, r.tp, r.kv_bytes, context, r.full_layers,
                                        r.window_layers, r.window, r.pp)
    ws_seq = footprint.workspace_bytes(r.new, 1.0, r.hidden, r.dims, np.maximum(
        r.dense_matrices * r.dense_ffn, 0.0), r.vocab, r.tp, r.act_bytes)
    seqs_dev = as_float(run["batch"]) / lay["dp"]  # all micro-batches keep their caches
    usable = hw.memory.capacity_bytes * as_float(run["memory_utilization"])
    total = weights + seqs_dev * kv_seq + r.seqs * ws_seq
    return {"weights_bytes_per_device": weights, "kv_cache_bytes_per_device": seqs_dev * kv_seq,
            "workspace_bytes_per_device": r.seqs * ws_seq, "memory_bytes_per_device": total,
            "memory_capacity_bytes": np.full(len(total), usable),
            "fits_in_memory": (total <= usable).astype(float),
            "max_batch": footprint.max_seqs(usable, weights, kv_seq + ws_seq / lay["micro"])
            * lay["dp"], "total_params": counts["total"], "active_params": counts["active"]}


def _evaluate(hw, hw_name: str, sub: dict, run: dict) -> dict:
    lay = _layout(run)
    moe = _moe_layer(hw_name, sub, run, lay)
    r = step_rows(hw, sub, run, lay, moe)
    dp = layer_params(hw)
    kinds = step.stage_times(dp, r, hw.scale_up.domain_size)
    stage = sum(kinds[k] for k in step.KINDS if k != "pp_comm")
    p2p, pp, micro = kinds["pp_comm"], lay["pp"], lay["micro"]
    ttft = (micro + pp - 1.0) * stage + (pp - 1.0) * p2p
    tpot = pp * (stage + p2p)
    step_time = np.where(lay["decode"], tpot, ttft)
    batch = as_float(run["batch"])
    tokens = np.where(lay["decode"], batch, batch * lay["new"])
    devices = lay["tp"] * lay["dp"] * pp
    per_dev = tokens / step_time / devices
    stack = np.stack([kinds[k] for k in step.KINDS], axis=1)
    names = np.array(step.KINDS, dtype=object)[stack.argmax(axis=1)]
    names = np.where(names == "attention", "attention:" + kinds["attention_bound"].astype(object),
                     names)
    out = {"ttft_s": np.where(lay["decode"], np.nan, ttft),
           "tpot_s": np.where(lay["decode"], tpot, np.nan), "step_time_s": step_time,
           "tokens_per_s": tokens / step_time, "tokens_per_s_per_device": per_dev,
           "tokens_per_s_per_node": per_dev * np.minimum(devices, hw.scale_up.domain_size),
           "devices": devices, "ep": lay["ep"],
           **{f"{k}_s": kinds[k] * np.where(lay["decode"], pp, micro + pp - 1.0)
              for k in step.KINDS},
           "attention_core_s": kinds["attention_core"], "pp_bubble_s": (pp - 1.0) * stage,
           "bottleneck": names, "moe_bottleneck": moe["bottleneck"],
           "moe_experts_hit": moe["experts_hit"]}
    out.update(_memory(hw, r, sub, run, lay, moe))
    return out


def layer_params(hw) -> layer.DeviceParams:
    from moesim.layer_rows import device_params

    return device_params(hw)


def param_counts(model) -> tuple[int, int, int]:
    """(total, active, input-embedding-only) parameters of one model description
    (:func:`moesim.core.params.model_params` over its fields): ``active`` counts the top-k
    routed experts a token uses; ``active - input_only`` leaves out the embedding lookup (a row
    gather, not a matrix product), as OpenAI and DeepSeek count."""
    from moesim.config.arch import model_columns

    counts = params.model_params(model_columns([model]))
    return (int(counts["total"][0]), int(counts["active"][0]), int(counts["input_only"][0]))
