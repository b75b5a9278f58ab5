"""A whole-model step's per-row inputs for ``core.step`` (:class:`core.step.StepRows`): the
engine's or profile's kernels per block, efficiency functions per row dtype, the softmax
exponential rate and the per-call GEMM cost, each evaluated once per distinct value."""
from __future__ import annotations

import numpy as np
import pandas as pd

from moesim.config.dtypes import bytes_per_element, compute_dtype, weight_bytes_per_param
from moesim.core import params, step
from moesim.layer_rows import map_distinct


#: Kernels per block of a fused serving engine (CUDA graphs; vLLM/SGLang/TRT-LLM fuse rope +
#: KV append, run one attention kernel, one RMSNorm(+residual) kernel) and of eager PyTorch
#: (the op count of the ``transformers`` modelling code: RMSNorm 7 ops, rotary 12, cache
#: update 2, repeat_kv 2, sdpa 1, reshape 1). A profile's ``efficiency.phases.kernels`` entries
#: ``attention``, ``norm``, ``embed``, ``lm_head`` (measured) take precedence.
ENGINE_KERNELS = {
    "fused": {"attention": 3.0, "norm": 1.0, "embed": 1.0, "lm_head": 2.0, "activation": 1.0},
    "eager": {"attention": 18.0, "norm": 7.0, "embed": 1.0, "lm_head": 2.0, "activation": 2.0},
}


def as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def per_value(fn, values) -> np.ndarray:
    """``fn(v)`` for every element of ``values``, evaluated once per distinct value."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=False)
    return np.asarray([fn(u) for u in uniques], dtype=float)[codes]


def block_kernels(hw, engine: np.ndarray, act: np.ndarray, mla: np.ndarray) -> dict:
    """Kernels per block ``[rows]``: the engine's counts, or the profile's measured ones
    (``attention_mla`` serves MLA models where the profile gives it)."""
    phases = hw.efficiency.phases
    out = {}
    for block in ENGINE_KERNELS["fused"]:
        base = per_value(lambda e, b=block: ENGINE_KERNELS[e][b], engine)
        if phases is not None and block != "activation":
            keyed = np.char.add(np.asarray(act, dtype=str), np.char.add("|", base.astype(str)))
            split = lambda k: k.split("|")  # noqa: E731
            base = per_value(lambda k, b=block: phases.lookup(
                "kernels", b, split(k)[0], float(split(k)[1])), keyed)
            if block == "attention":
                mla_base = per_value(lambda k: phases.lookup(
                    "kernels", "attention_mla", split(k)[0], float(split(k)[1])), keyed)
                base = np.where(mla, mla_base, base)
        out[block] = base
    return out


def eff_fn(curve, dtypes: np.ndarray):
    kinds = pd.unique(np.asarray(dtypes, dtype=object))
    if len(kinds) == 1:
        return lambda m: curve.at(m, kinds[0])

    def eff(m):
        m = np.asarray(m, float)
        out = np.empty_like(m)
        flat = m.reshape(len(dtypes), -1)
        res = out.reshape(len(dtypes), -1)
        for dt in set(dtypes):
            mask = dtypes == dt
            res[mask] = curve.at(flat[mask], dt)
        return out
    return eff


def shape_eff_fn(curve, dtypes: np.ndarray):
    """``eff(m, n, k)`` per row ``[rows]`` at each row's dtype: a grid profile reads the GEMM
    shape (``config.shape_grid``), an M-only curve reads ``m`` alone."""
    dtypes = np.asarray(dtypes, dtype=object)

    def eff(m, n, k):
        m, n, k = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (m, n, k)))
        out = np.empty(m.shape)
        for dt in pd.unique(dtypes):
            mask = dtypes == dt
            out[mask] = curve.at(m[mask], dt, n=n[mask], k=k[mask])
        return out
    return eff


def gemm_call_fixed(hw, dtypes: np.ndarray) -> np.ndarray:
    """The profile's per-call GEMM fixed cost at each row's dtype ``[rows]`` (0 without one)."""
    call = hw.efficiency.gemm_call
    return np.zeros(len(dtypes)) if call is None else per_value(call.fixed, dtypes)


def exp_rate(hw, rows: int) -> np.ndarray:
    """The profile's softmax exponentials per second ``[rows]`` (inf where it gives none)."""
    rate = hw.compute.exp_per_s
    return np.full(rows, np.inf if rate is None else float(rate))


def step_rows(hw, sub: dict, run: dict, lay: dict, moe: dict) -> step.StepRows:
    dims = params.head_dims(sub)
    dims.update(q_lora=as_float(sub["q_lora_rank"]), kv_lora=as_float(sub["kv_lora_rank"]))
    act = sub["activation_dtype"].astype(object)
    weight = sub["weight_dtype"].astype(object)
    # the dtype the dense GEMMs run in (fp8 weights in fp8; w4a16 weights in the activations')
    dense_dtype = map_distinct(lambda w, c, a: compute_dtype(w, None if pd.isna(c) else c, a),
                               weight, sub["compute_dtype"], act, kind=object)
    kv = np.where(pd.isna(run["kv_dtype"]), act, run["kv_dtype"]).astype(object)
    bpe = lambda dts: per_value(bytes_per_element, dts)  # noqa: E731
    window_layers = as_float(sub["window_layers"])
    return step.StepRows(
        hidden=as_float(sub["hidden"]), vocab=as_float(sub["vocab"]), dims=dims,
        mla=as_float(sub["kv_lora_rank"]) > 0,
        full_layers=as_float(sub["moe_layers"]) + as_float(sub["dense_layers"]) - window_layers,
        window_layers=window_layers, window=as_float(sub["sliding_window"]),
        chunked=sub["window_kind"] == "chunked", moe_layers=as_float(sub["moe_layers"]),
        dense_layers=as_float(sub["dense_layers"]), dense_ffn=as_float(sub["dense_ffn"]),
        dense_matrices=np.where(params.dense_gated(sub), 3.0, 2.0),
        seqs=lay["seqs"], new=lay["new"], past=lay["past"], decode=lay["decode"],
        mla_expand=np.asarray(run["mla_decode"] == "expand", dtype=bool), tp=lay["tp"],
        moe_tp=lay["moe_tp"], pp=lay["pp"], moe_tokens=as_float(moe["tokens"]),
        moe_layer_s=as_float(moe["time_s"]), act_bytes=bpe(act), kv_bytes=bpe(kv),
        dense_weight_bytes=per_value(weight_bytes_per_param, weight),
        embed_bytes=bpe(act),
        peak_dense_flops_per_s=per_value(hw.peak_flops_per_s, dense_dtype),
        peak_attn_flops_per_s=per_value(hw.peak_flops_per_s, act),
        dense_eff=eff_fn(hw.efficiency.gemm, dense_dtype),
        attn_eff=shape_eff_fn(hw.efficiency.gemm, act), exp_per_s=exp_rate(hw, len(act)),
        call_fixed_s=gemm_call_fixed(hw, dense_dtype),
        kernels=block_kernels(hw, run["engine"], act, as_float(sub["kv_lora_rank"]) > 0))
