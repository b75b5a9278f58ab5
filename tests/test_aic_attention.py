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
    keys = 33 * 128.0  # mean causal keys (L + 1) / 2 = 4096.5, padded to whole 128-key tiles
    flops = 4 * 2 * 8 * 256 * L * keys  # query rows already whole 128-row tiles
    # flash-equivalent GEMM: M = all query rows 4 x 8192 x 8 heads, N = d_qk + d_v, K = keys
    eff = hw.efficiency.gemm.at(np.array([4 * L * 8]), "bf16", n=np.array([256.0]),
                                k=np.array([keys]))[0]
    exps = 4 * 8 * L * keys  # one per (query, key, head)
    launches = 3 * hw.compute.launch_overhead_s  # the fused engine's attention kernels
    assert got.bound.iloc[0] == "compute"
    assert got.predicted_s.iloc[0] == pytest.approx(
        flops / (hw.peak_flops_per_s("bf16") * eff) + exps / 3.9e12 + launches, rel=1e-6)


def test_flash_shape_and_tiles_by_hand():
    dims = {"heads": np.array([32.0]), "kv_heads": np.array([8.0]), "nope": np.array([128.0]),
            "rope": np.array([0.0]), "v": np.array([128.0]), "kv_lora": np.array([0.0])}
    no = np.array([False])
    # prefill of 300 tokens x 2 sequences, causal: mean keys 150.5
    pairs = core_attn.attended_keys(np.array([300.0]), np.array([0.0]), np.array([0.0]), no)
    m, n, k = core_attn.flash_shape(dims, no, no, 2.0, np.array([2.0]), np.array([300.0]), pairs)
    assert (m[0], n[0], k[0]) == (2 * 300 * 16, 256.0, pytest.approx(150.5))
    # 300 rows -> 3 tiles of 128 = 384; 150.5 keys -> 2 tiles = 256
    assert core_attn.tiled_pairs(np.array([300.0]), pairs, no)[0] == 384 * 256
    # decode: one query per sequence over 1000 cached keys, nothing padded
    dec = np.array([True])
    assert core_attn.tiled_pairs(np.array([1.0]), np.array([1001.0]), dec)[0] == 1001.0
    assert core_attn.softmax_exps(dims, 2.0, np.array([3.0]), np.array([10.0]))[0] == 16 * 10 * 3


def test_constant_grid_gives_the_constant_and_sees_the_flash_shape():
    from moesim.calibration.aic.attention import step_rows
    from moesim.core import step
    from moesim.wholemodel import layer_params

    hw = load_profile(PROFILE)
    rows = attention.normalise(_raw("context_attention", batch_size=2, isl=256, num_heads=16,
                                    num_key_value_heads=4, head_dim=64))
    seen = []
    r = step_rows(rows, hw)
    const = lambda m, n, k: seen.append((m, n, k)) or np.full(np.shape(m), 0.25)  # noqa: E731
    r = step.StepRows(**{**r.__dict__, "attn_eff": const, "exp_per_s": np.array([np.inf])})
    out = step.attention_layer(layer_params(hw), r, r.window)
    m, n, k = seen[0]
    # K: the kernel's keys per query, 128.5 padded to two whole 128-key tiles
    assert (m[0], n[0], k[0]) == (2 * 256 * 16, 128.0, 256.0)
    flops = 2 * 2 * 16 * 128 * 256 * 256.0  # 128.5 mean keys -> two 128-key tiles
    hwp = layer_params(hw)
    assert out["core"][0] == pytest.approx(
        flops / (hw.peak_flops_per_s("bf16") * 0.25) + 3 * hwp.launch_overhead_s, rel=1e-9)


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
