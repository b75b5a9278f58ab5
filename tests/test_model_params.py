"""Whole-model parameter counts from the architecture fields against published totals.

Published figures are quoted in each preset's ``source``. Publishers differ on whether the
input embedding (a lookup, not a matrix product) counts as "active": OpenAI's gpt-oss model
card leaves it out (5.13B), Mistral (Mixtral 12.9B), Meta (Llama 4 17B), Qwen and AllenAI
count it, DeepSeek leaves it out (V3: 36.6B -> "37B"; counted it would be 37.6B). Each row
names its convention. The tolerance is 1 % or, where the publisher gives only two
significant digits, half a unit of the last digit plus 1 % (a rounded "37B" says 36.5-37.5B).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from moesim.config import load_model
from moesim.config.arch import model_columns
from moesim.wholemodel import param_counts
from moesim.core import params

# name: (total, active, active counts the input embedding, significant digits given)
PUBLISHED = {
    "mixtral-8x7b": (46.7e9, 12.9e9, True, 3),
    "deepseek-v3": (671e9, 37e9, False, 2),
    "qwen3-235b-a22b": (235e9, 22e9, True, 2),
    "qwen3-30b-a3b": (30.5e9, 3.3e9, True, 2),
    "gpt-oss-120b": (116.83e9, 5.13e9, False, 3),
    "llama4-maverick": (400e9, 17e9, True, 2),
    "dbrx": (132e9, 36e9, True, 2),
    "olmoe-1b-7b": (6.9e9, 1.3e9, True, 2),
    "deepseek-v2": (236e9, 21e9, False, 2),
    "glam": (1.2e12, 96.6e9, True, 2),
    "switch-c": (1.571e12, None, True, 4),
    "grok-1": (314e9, None, True, 3),
}


def _tolerance(value: float, digits: int) -> float:
    """1 %, or half a unit of the last published digit plus 1 % for 2-digit figures."""
    if digits >= 3:
        return 0.01 * value
    unit = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return 0.5 * unit + 0.01 * value


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_total_and_active_params_match_published(name):
    total, active, with_embedding, digits = PUBLISHED[name]
    model = load_model(name)
    total_digits = 2 if name == "glam" else max(digits, 3)  # "1.2T"; the others give >= 3
    assert abs(param_counts(model)[0] - total) <= _tolerance(total, total_digits)
    if active is not None:
        total_, active_, input_only = param_counts(model)
        got = active_ if with_embedding else active_ - input_only
        assert abs(got - active) <= _tolerance(active, digits), got / 1e9


def test_mixtral_count_by_hand():
    """32 x (attention 2*4096^2 + 2*4096*1024, 8 experts 3*4096*14336, router, 2 norms)
    + embedding and head 2*32000*4096 + final norm."""
    m = load_model("mixtral-8x7b")
    layer = 2 * 4096 ** 2 + 2 * 4096 * 1024 + 8 * 3 * 4096 * 14336 + 4096 * 8 + 2 * 4096
    assert param_counts(m)[0] == 32 * layer + 2 * 32000 * 4096 + 4096


def test_mla_attention_by_hand():
    """DeepSeek-V3 MLA: q_a 7168*1536 + 1536 + q_b 1536*128*192 + kv_a 7168*576 + 512
    + kv_b 512*128*256 + o 128*128*7168."""
    cols = model_columns([load_model("deepseek-v3")])
    expected = (7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256
                + 128 * 128 * 7168)
    assert params.attention_params(cols)[0] == expected


def test_parts_sum_to_total_and_tied_embedding_counts_once():
    m = load_model("grok-1")
    parts = params.model_params(model_columns([m]))
    summed = sum(parts[k] for k in ("embedding", "lm_head", "attention", "dense_ffn", "moe",
                                     "norms"))
    assert np.allclose(summed, parts["total"]) and parts["lm_head"][0] == 0
    assert param_counts(m)[2] == 0  # the head uses it


def test_every_preset_describes_its_architecture():
    from moesim.config import available_models

    for name in available_models():
        m = load_model(name)
        assert m.vocab > 0 and m.heads > 0 and m.attention_kind, name
        assert not m.dense_layers or m.dense_ffn > 0, name


@pytest.mark.parametrize("fields, message", [
    ({"heads": 32, "kv_heads": 6}, "multiple of kv_heads"),
    ({"window_layers": 3}, "needs sliding_window"),
    ({"kv_lora_rank": 512}, "needs qk_rope_head_dim"),
    ({"heads": 30, "kv_heads": 30}, "give head_dim"),
])
def test_inconsistent_architecture_is_a_clear_error(fields, message):
    from moesim.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_model("mixtral-8x7b", **fields)


def test_models_command_shows_total_and_active(capsys):
    from moesim.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("deepseek-v3 "))
    assert "mla" in line and "671.0B" in line and "37.6B" in line
