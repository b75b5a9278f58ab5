"""moesim's prediction of AIConfigurator's attention/MLA rows (moesim.calibration.aic.attention).

Synthetic rows with hand-derived expectations (no timing), plus a tiny real-data slice skipped
when ``aiconfigurator-core`` is not installed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moesim.calibration.aic import attention
from moesim.config import load_profile
from moesim.core import attention as core_attn

PROFILE = "h200-sxm-trtllm"


def _raw(op, **kw) -> pd.DataFrame:
    base = {"op_name": op, "batch_size": 1, "isl": 1, "num_heads": 8, "num_key_value_heads": 8,
            "head_dim": 128, "window_size": 0, "attn_dtype": "bfloat16",
            "kv_cache_dtype": "bfloat16", "step": 0, "latency": 1.0}
    base.update(kw)
    return pd.DataFrame([base])


def _mla_raw(op, **kw) -> pd.DataFrame:
    base = {"op_name": op, "batch_size": 1, "isl": 1, "num_heads": 128, "mla_dtype": "bfloat16",
            "kv_cache_dtype": "bfloat16", "tp_size": 1, "step": 0, "latency": 1.0}
    base.update(kw)
    return pd.DataFrame([base])


def _predict(raw: pd.DataFrame) -> pd.DataFrame:
    return attention.predict_rows(attention.normalise(raw), load_profile(PROFILE))


def _device():
    from moesim.wholemodel import layer_params
    return layer_params(load_profile(PROFILE))


def test_generation_is_memory_bound_kv_bytes_over_bandwidth():
    # 64 sequences x 32768 cached tokens x (K and V) 8 heads x 128 dims x 2 bytes = 8.6 GB
    raw = _raw("generation_attention", batch_size=64, step=32767)
    kv_bytes = 64 * 32768 * 2 * 8 * 128 * 2.0
    dev = _device()
    expected = kv_bytes / (dev.mem_bytes_per_s * dev.mem_eff)
    got = _predict(raw)
    assert got.bound.iloc[0] == "memory"
    # q/o and the one appended token add < 0.1 %, three launches a few microseconds
    assert got.predicted_s.iloc[0] == pytest.approx(expected, rel=5e-3)


def test_generation_doubling_past_doubles_time():
    t1 = _predict(_raw("generation_attention", batch_size=64, step=16383)).predicted_s.iloc[0]
    t2 = _predict(_raw("generation_attention", batch_size=64, step=32767)).predicted_s.iloc[0]
    assert t2 / t1 == pytest.approx(2.0, rel=5e-3)


def test_fp8_kv_cache_halves_memory_bound_time():
    bf16 = _predict(_raw("generation_attention", batch_size=64, step=32767)).predicted_s.iloc[0]
    fp8 = _predict(_raw("generation_attention", batch_size=64, step=32767,
                        kv_cache_dtype="fp8")).predicted_s.iloc[0]
    assert fp8 / bf16 == pytest.approx(0.5, rel=5e-3)


def test_causal_context_flops_are_half_of_full():
    L = 4096.0
    pairs = core_attn.attended_keys(np.array([L]), np.array([0.0]), np.array([0.0]),
                                    np.array([False]))
    assert pairs[0] == L * (L + 1) / 2  # keys 1..L per query: about half of the L x L square
    dims = {"heads": 8.0, "kv_heads": 8.0, "nope": 128.0, "rope": 0.0, "v": 128.0,
            "kv_lora": 0.0}
    flops = core_attn.core_flops(dims, np.array([False]), np.array([False]), 1.0, 2.0, pairs)
    full = 2 * 2.0 * 8 * (128 + 128) * L * L  # 2 seqs, QK^T + PV, every pair
    assert flops[0] / full == pytest.approx(0.5, rel=1e-3)


def test_context_row_is_compute_bound_flops_over_peak_eff():
    hw = load_profile(PROFILE)
    rows = attention.normalise(_raw("context_attention", batch_size=4, isl=8192))
    got = attention.predict_rows(rows, hw)
    L = 8192.0
    flops = 4 * 2 * 8 * 256 * L * (L + 1) / 2
    eff = hw.efficiency.gemm.at(np.array([L]), "bf16")[0]  # one query row per KV head (MHA)
    launches = 3 * hw.compute.launch_overhead_s  # the fused engine's attention kernels
    assert got.bound.iloc[0] == "compute"
    assert got.predicted_s.iloc[0] == pytest.approx(
        flops / (hw.peak_flops_per_s("bf16") * eff) + launches, rel=1e-6)


def test_mla_generation_runs_absorbed_over_the_latent():
    rows = attention.normalise(_mla_raw("mla_generation", batch_size=8, step=1023))
    assert rows.past.iloc[0] == 1023 and rows.new.iloc[0] == 1
    # latent + rope key per token: 512 + 64 elements, bf16; 1024 keys after the append
    dims = attention._dims(rows)
    elems = core_attn.kv_elements_per_token(dims, rows.mla.to_numpy(), 1.0)
    assert elems[0] == 576
    d_qk, d_v = core_attn.core_dims(dims, rows.mla.to_numpy(), rows.decode.to_numpy())
    assert (d_qk[0], d_v[0]) == (576, 512)


def test_module_rows_add_projections_and_generation_step_counts_the_new_token():
    bare = attention.normalise(_mla_raw("mla_generation", step=100))
    module = attention.normalise(_mla_raw("mla_generation_module", step=100, gemm_type="bfloat16"))
    assert bare.past.iloc[0] == 100 and module.past.iloc[0] == 99
    got = _predict(_mla_raw("mla_context_module", isl=1024, gemm_type="bfloat16"))
    assert got.proj_s.iloc[0] > 0
    assert got.predicted_s.iloc[0] == pytest.approx(got.proj_s.iloc[0] + got.core_s.iloc[0])
    bare_got = _predict(_mla_raw("mla_context", isl=1024))
    assert bare_got.proj_s.iloc[0] == 0 and bare_got.predicted_s.iloc[0] == bare_got.core_s.iloc[0]


def test_sliding_window_caps_generation_reads():
    full = _predict(_raw("generation_attention", batch_size=64, step=32767)).predicted_s.iloc[0]
    win = _predict(_raw("generation_attention", batch_size=64, step=32767,
                        window_size=8192)).predicted_s.iloc[0]
    assert win / full == pytest.approx(8192 / 32768, rel=2e-2)


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="unknown op_name"):
        attention.normalise(_raw("cross_attention"))


def test_real_slice_predicts_finite_positive_times():
    pytest.importorskip("aiconfigurator_core")
    from moesim.calibration.aic import reader

    for table in ("generation_attention_perf", "context_mla_perf"):
        raw = reader.load(reader.locate("h200_sxm", table, "trtllm")).head(20)
        got = _predict(raw)
        assert np.isfinite(got.predicted_s).all() and (got.predicted_s > 0).all()
        ratio = got.predicted_s / (raw.latency.to_numpy() * 1e-3)
        assert ((ratio > 0.05) & (ratio < 20)).all()
