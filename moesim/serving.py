"""Whole-model answers for one deployment: ``predict_model`` and ``serving_curve``.

``serving_curve`` sweeps the decode batch (powers of two up to the largest batch whose KV
cache fits, ``max_batch``) and returns per-token latency (TPOT) against tokens/s per device:
the throughput-latency trade-off a serving deployment chooses its operating point on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.config import ConfigError
from moesim.predict import predict_many as predict_layers
from moesim.wholemodel import MODEL_RUN_FIELDS, MOE_RUN_FIELDS, predict_model_many


def predict_many(df: pd.DataFrame) -> pd.DataFrame:
    """``moesim.predict_many``: rows whose ``scope`` column is ``model`` are whole models
    (:func:`moesim.wholemodel.predict_model_many`); otherwise one MoE layer per row
    (:func:`moesim.predict.predict_many`). One call takes one scope."""
    if "scope" in df.columns and len(df):
        scopes = set(pd.unique(df["scope"].astype(object)))
        if scopes == {"model"}:
            return predict_model_many(df)
        if scopes != {"layer"}:
            raise ConfigError(f"scope must be 'layer' or 'model' for every row of one call, got "
                              f"{sorted(map(str, scopes))}", field="scope")
        df = df.drop(columns="scope")
    return predict_layers(df)


def _row(model, hardware, run: dict) -> dict:
    from moesim.config import MODEL_FIELDS

    bad = [k for k in run if k not in MODEL_RUN_FIELDS + MOE_RUN_FIELDS + MODEL_FIELDS]
    if bad:
        from moesim.config.errors import unknown

        raise ConfigError(unknown("field", bad[0], MODEL_RUN_FIELDS + MOE_RUN_FIELDS
                                  + MODEL_FIELDS), field=bad[0])
    return {"model": str(model), "hardware": str(hardware), **run}


def predict_model(model="deepseek-v3", hardware="h200-sxm", **run) -> pd.Series:
    """One whole-model prediction (a Series of ``wholemodel.OUTPUT_COLUMNS`` and the inputs).

    ``run``: ``phase`` (prefill | decode), ``batch``, ``prompt_len``, ``context``, ``tp``,
    ``dp_attn``, ``pp``, ``moe_tp``, ``kv_dtype``, ``engine``, ``mla_decode``, MoE run fields (``overlap``,
    ``routing``, ``placement`` ...) and model-field overrides.
    """
    return predict_model_many(pd.DataFrame([_row(model, hardware, run)])).iloc[0]


def serving_curve(model="deepseek-v3", hardware="h200-sxm", *, max_points: int = 16,
                  **run) -> pd.DataFrame:
    """Decode TPOT and tokens/s per device as the batch doubles from 1 to ``max_batch``."""
    run = {**run, "phase": "decode"}
    probe = predict_model(model, hardware, **{**run, "batch": 1})
    cap = int(probe["max_batch"])
    if cap < 1:
        raise ConfigError(f"{model} does not fit on {hardware} in this layout "
                          f"(weights {probe['weights_bytes_per_device'] / 1e9:.1f} GB per device "
                          f"of {probe['memory_capacity_bytes'] / 1e9:.1f} GB usable)",
                          field="model")
    batches = sorted({*(2 ** np.arange(int(np.log2(cap)) + 1)), cap})[-max_points:]
    frame = pd.DataFrame([_row(model, hardware, {**run, "batch": int(b)}) for b in batches])
    return predict_model_many(frame)
