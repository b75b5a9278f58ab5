"""Whole-model prediction: hand-derived cases, invariants, memory, errors, CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moesim.config import ConfigError, load_model, load_profile
from moesim.core import attention, comm, params
from moesim import predict_many
from moesim.serving import predict_model, serving_curve
from moesim.wholemodel import predict_model_many


def test_attended_keys_matches_brute_force():
    for new, past, w, chunked in [(7, 0, 0, False), (5, 13, 4, False), (20, 3, 8, True),
                                  (1, 4096, 128, False), (1, 9000, 8192, True)]:
        brute = sum(i if w == 0 else (((i - 1) % w) + 1 if chunked else min(i, w))
                    for i in range(past + 1, past + new + 1))
        got = attention.attended_keys(np.array([new]), np.array([past]), np.array([w]),
                                      np.array([chunked]))[0]
        assert got == brute


def test_mla_decode_caches_the_latent_and_gqa_caches_kv_heads():
    v3 = params.head_dims(_cols("deepseek-v3"))
    v3.update(kv_lora=np.array([512.0]), q_lora=np.array([1536.0]))
    assert attention.kv_elements_per_token(v3, np.array([True]), 8.0)[0] == 512 + 64
    mix = params.head_dims(_cols("mixtral-8x7b"))
    mix.update(kv_lora=np.array([0.0]), q_lora=np.array([0.0]))
    # 8 KV heads of 128: 2 x 8 x 128 per token; at tp 16 each rank still keeps one KV head
    assert attention.kv_elements_per_token(mix, np.array([False]), 1.0)[0] == 2 * 8 * 128
    assert attention.kv_elements_per_token(mix, np.array([False]), 16.0)[0] == 2 * 1 * 128


def _cols(name):
    from moesim.config.arch import model_columns

    return model_columns([load_model(name)])


def test_ring_allreduce_by_hand():
    link = dict(up_bytes_per_s=100e9, up_eff=1.0, up_latency_s=1e-6, out_bytes_per_s=10e9,
                out_eff=1.0, out_latency_s=5e-6, launch_overhead_s=0.0)
    t = comm.allreduce(np.array([8e6, 8e6, 8e6]), np.array([1, 4, 16]), 8, **link)
    assert t[0] == 0.0
    assert t[1] == pytest.approx(6 * (1e-6 + 2e6 / 100e9))
    assert t[2] == pytest.approx(30 * (5e-6 + 0.5e6 / 10e9))


def test_decode_memory_matches_hand_count():
    """Mixtral on one H100, 4 sequences at 4096: KV = 4 x 32 layers x 2 x 8 x 128 x 2 B x 4097."""
    row = predict_model("mixtral-8x7b", "h100-sxm", batch=4, context=4096)
    assert row["kv_cache_bytes_per_device"] == pytest.approx(4 * 32 * 2 * 8 * 128 * 2 * 4097)
    assert row["weights_bytes_per_device"] == pytest.approx(46.70e9 * 2, rel=0.01)
    assert row["fits_in_memory"] == 0.0  # 93 GB of bf16 weights on an 80 GB card
    half = predict_model("mixtral-8x7b", "h100-sxm", batch=4, context=4096, tp=2)
    assert half["weights_bytes_per_device"] == pytest.approx(46.70e9, rel=0.02)


def test_decode_invariants():
    base = dict(batch=32, context=4096, dp_attn=8)
    row = predict_model("deepseek-v3", "h200-sxm", **base)
    longer = predict_model("deepseek-v3", "h200-sxm", **{**base, "context": 16384})
    fp8 = predict_model("deepseek-v3", "h200-sxm", **{**base, "kv_dtype": "fp8"})
    assert longer["tpot_s"] > row["tpot_s"] and longer["attention_s"] > row["attention_s"]
    assert fp8["kv_cache_bytes_per_device"] == pytest.approx(row["kv_cache_bytes_per_device"] / 2)
    assert fp8["attention_s"] <= row["attention_s"]
    assert row["tokens_per_s"] == pytest.approx(32 / row["tpot_s"])
    assert row["tp_comm_s"] == 0.0 and row["pp_bubble_s"] == 0.0


def test_sliding_window_bounds_decode_reads():
    full = predict_model("gpt-oss-120b", "h100-sxm", batch=8, context=65536, window_layers=0,
                         sliding_window=0)
    windowed = predict_model("gpt-oss-120b", "h100-sxm", batch=8, context=65536)
    assert windowed["attention_s"] < full["attention_s"]
    assert windowed["kv_cache_bytes_per_device"] == pytest.approx(
        full["kv_cache_bytes_per_device"] * (18 * 65537 + 18 * 128) / (36 * 65537))


def test_pipeline_bubble_and_micro_batches():
    one = predict_model("mixtral-8x7b", "h100-sxm", phase="prefill", batch=8, prompt_len=512,
                        tp=2)
    two = predict_model("mixtral-8x7b", "h100-sxm", phase="prefill", batch=8, prompt_len=512,
                        tp=2, pp=2)
    assert two["pp_bubble_s"] > 0 and two["devices"] == 4
    # two stages of half the layers on half-size micro-batches: about 3/4 of the one-stage time
    assert 0.5 * one["ttft_s"] < two["ttft_s"] < one["ttft_s"]


def test_serving_curve_stops_where_kv_runs_out():
    curve = serving_curve("qwen3-30b-a3b", "h100-sxm", context=8192)
    cap = int(curve["max_batch"].iloc[0])
    assert curve["batch"].max() == cap and curve["fits_in_memory"].all()
    assert (np.diff(curve["tokens_per_s"]) > 0).all()
    assert (np.diff(curve["tpot_s"]) >= 0).all()
    too_many = predict_model("qwen3-30b-a3b", "h100-sxm", batch=cap + 64, context=8192)
    assert too_many["fits_in_memory"] == 0.0


def test_predict_many_scope_column_and_moe_layer_is_the_per_layer_prediction():
    df = pd.DataFrame({"scope": "model", "model": "olmoe-1b-7b", "hardware": "h100-sxm",
                       "batch": [1, 64], "context": 2048})
    out = predict_many(df)
    assert len(out) == 2 and (out["tpot_s"] > 0).all()
    layer = predict_many(pd.DataFrame({"model": ["olmoe-1b-7b"], "hardware": ["h100-sxm"],
                                       "tokens": [64]}))
    assert out["moe_s"].iloc[1] == pytest.approx(16 * layer["time_s"].iloc[0])


@pytest.mark.parametrize("change, field", [
    ({"phase": "decoding"}, "phase"), ({"batch": 0}, "batch"), ({"tp": -1}, "tp"),
])
def test_bad_run_values_name_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        predict_model("mixtral-8x7b", "h100-sxm", **change)


def test_encoder_decoder_and_undescribed_models_are_refused():
    with pytest.raises(ConfigError, match="encoder-decoder"):
        predict_model("switch-c", "h100-sxm")
    frame = pd.DataFrame({"model": ["custom"], "hardware": ["h100-sxm"], "hidden": [1024],
                          "expert_ffn": [512], "experts": [8], "top_k": [2]})
    with pytest.raises(ConfigError, match="vocab, heads"):
        predict_model_many(frame)


def test_cli_scope_model(capsys):
    from moesim.cli import main

    assert main(["predict", "--scope", "model", "-m", "mixtral-8x7b", "-H", "h100-sxm",
                 "--batch", "16", "--context", "1024", "--tp", "2"]) == 0
    out = capsys.readouterr().out
    assert "TPOT" in out and "memory per device" in out and "attention" in out


def test_latent_expansion_counts_the_cached_tokens_and_expanded_bytes():
    """Hand-derived: 2 sequences, 10 cached keys of which 1 new, 4 heads on 2 TP ranks,
    d = 8, d_r = 4, d_v = 8: kv_b runs over 2 x 9 cached rows; the expanded K and V are
    2 x 2 x 10 x 2 x (8 + 4 + 8) = 1,600 elements (written, then read by the core)."""
    from moesim.core.attention import latent_expansion

    dims = {"heads": 4.0, "nope": 8.0, "rope": 4.0, "v": 8.0}
    rows, expanded = latent_expansion(dims, 2.0, 2.0, np.array([10.0]), np.array([1.0]))
    assert rows[0] == 18.0 and expanded[0] == 1600.0


def test_mla_expand_costs_decode_only_and_at_least_the_expansion_flops():
    absorbed = predict_model("deepseek-v3", "h200-sxm", phase="decode", batch=64, context=4096,
                             dp_attn=8)
    expand = predict_model("deepseek-v3", "h200-sxm", phase="decode", batch=64, context=4096,
                           dp_attn=8, mla_decode="expand")
    # kv_b over 8 sequences x 4,096 cached tokens per layer: 2 * rows * 512 * 128 * (128 + 128)
    layers, rows = 61, 8 * 4095
    floor_s = layers * 2 * rows * 512 * 128 * 256 / 989e12
    assert expand.attention_s - absorbed.attention_s > floor_s
    same = [predict_model("deepseek-v3", "h200-sxm", phase="prefill", batch=2, prompt_len=512,
                          mla_decode=m).ttft_s for m in ("absorbed", "expand")]
    assert same[0] == same[1]
    gqa = [predict_model("mixtral-8x7b", "h100-sxm", phase="decode", batch=8,
                         mla_decode=m).tpot_s for m in ("absorbed", "expand")]
    assert gqa[0] == gqa[1]
