"""MoE model presets, Hugging Face config.json reading, and model validation errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.config import MODEL_FIELDS, ConfigError, MoEModel, available_models, load_model
from moesim.config.dtypes import DTYPE_BYTES
from moesim.config.hf import model_from_hf_config

HF_DIR = Path(__file__).parent / "data" / "hf_configs"
PRESETS = available_models()

REQUIRED = {"mixtral-8x7b", "mixtral-8x22b", "deepseek-v3", "qwen3-30b-a3b", "qwen3-235b-a22b",
            "dbrx", "gpt-oss-120b", "gpt-oss-20b", "llama4-maverick", "olmoe-1b-7b"}

# name: (published total, published active, min MoE share of total, min MoE share of active).
# The rest of the total is attention + embeddings/head + dense layers, which moe_layer_params()
# does not count; each lower bound sits just below the share those parts leave (estimated from
# the same config.json), so a wrong expert count, width or layer count fails. Upper bound: the
# MoE layers never exceed the published count. Published numbers are quoted in each YAML source.
PUBLISHED = {
    "mixtral-8x7b": (46.7e9, 12.9e9, 0.95, 0.85),      # attn 1.3B + emb/head 0.26B
    "mixtral-8x22b": (141e9, 39e9, 0.95, 0.85),        # attn 4.9B + emb/head 0.4B
    "deepseek-v3": (671e9, 37e9, 0.97, 0.60),          # MLA ~11B, 3 dense layers 1.2B, emb 1.9B
    "qwen3-30b-a3b": (30.5e9, 3.3e9, 0.93, 0.50),      # attn 0.9B + emb/head 0.6B
    "qwen3-235b-a22b": (235e9, 22e9, 0.95, 0.60),      # attn 6.7B + emb/head 1.2B
    "dbrx": (132e9, 36e9, 0.95, 0.85),                 # attn 3.5B + emb/head 1.2B
    "gpt-oss-120b": (116.8e9, 5.1e9, 0.97, 0.65),      # emb/head 1.2B + attn 0.9B
    "gpt-oss-20b": (20.9e9, 3.6e9, 0.90, 0.60),        # emb/head 1.2B is 6% of this one
    "llama4-maverick": (400e9, 17e9, 0.95, 0.33),      # 24 dense layers 6.0B, attn 3.0B, emb 2.1B
    "llama4-scout": (109e9, 17e9, 0.93, 0.65),         # attn 3.0B + emb/head 2.1B
    "olmoe-1b-7b": (6.9e9, 1.3e9, 0.92, 0.60),         # attn 0.27B + emb/head 0.2B
    "qwen1.5-moe-a2.7b": (14.3e9, 2.7e9, 0.91, 0.60),  # attn 0.4B + emb/head 0.6B
    "qwen2-57b-a14b": (57e9, 14e9, 0.95, 0.85),        # attn 0.8B + emb/head 1.1B
    "deepseek-v2-lite": (15.7e9, 2.4e9, 0.92, 0.70),   # MLA 0.3B, 1 dense layer, emb/head 0.4B
    "kimi-k2": (1.04e12, 32.6e9, 0.96, 0.70),          # MLA ~10B, 1 dense layer, emb/head 2.3B
    "deepseek-v2": (236e9, 21e9, 0.95, 0.50),          # MLA 9B, 1 dense layer, emb/head 1B
    "grok-1": (314e9, None, 0.98, None),               # attn 5.6B + tied emb 0.8B; active unpublished
    "switch-base-128": (7.4e9, None, 0.97, None),      # encoder-decoder; active not published
    "switch-c": (1.571e12, None, 0.99, None),
    "glam": (1.2e12, 96.6e9, 0.90, 0.33),              # dense layers 25.8B, attn 34.4B
    "gpt-4-rumoured": (1.8e12, 280e9, 0.95, 0.75),     # rumour: 55B attention
}


# --- presets -------------------------------------------------------------------------------

def test_required_presets_exist():
    assert REQUIRED <= set(PRESETS), REQUIRED - set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_loads_with_name_source_and_description(name):
    model = load_model(name)
    assert model.name == name
    assert "config.json" in model.source
    assert "total" in model.description and "active" in model.description


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_params_agree_with_published_counts(name):
    total, active, min_total_share, min_active_share = PUBLISHED[name]
    model = load_model(name)
    moe_total = model.moe_layer_params() * model.moe_layers
    moe_active = model.active_moe_layer_params() * model.moe_layers
    assert min_total_share * total <= moe_total <= total * 1.01, moe_total / total
    if active is not None:
        assert min_active_share * active <= moe_active <= active, moe_active / active


def test_every_preset_has_a_published_count():
    assert set(PRESETS) == set(PUBLISHED)


def test_layer_counts_of_interleaved_and_dense_first_models():
    maverick = load_model("llama4-maverick")
    assert (maverick.moe_layers, maverick.dense_layers) == (24, 24)
    v3 = load_model("deepseek-v3")
    assert (v3.moe_layers, v3.dense_layers, v3.num_groups, v3.topk_groups) == (58, 3, 8, 4)
    assert (v3.router, v3.weight_dtype, v3.dispatch_dtype) == ("sigmoid", "fp8", "fp8")
    assert load_model("gpt-oss-120b").weight_dtype == "mxfp4"


# --- overrides and validation errors -------------------------------------------------------

def test_override_replaces_a_field():
    model = load_model("mixtral-8x7b", experts=16)
    assert model.experts == 16 and model.top_k == 2


@pytest.mark.parametrize("override, field, expected", [
    ({"top_k": 0}, "top_k", "greater than 0"),
    ({"top_k": 9}, "top_k", "<= experts"),
    ({"weight_dtype": "fp7"}, "weight_dtype", "expected one of"),
    ({"topk": 2}, "topk", "did you mean 'top_k'"),
    ({"num_groups": 3}, "num_groups", "experts (8) must divide"),
])
def test_bad_override_names_field_and_expectation(override, field, expected):
    with pytest.raises(ConfigError) as err:
        load_model("mixtral-8x7b", **override)
    assert field in str(err.value) and expected in str(err.value)


def test_unknown_preset_suggests_close_name():
    with pytest.raises(ConfigError, match="did you mean 'mixtral-8x7b'"):
        load_model("mixtral-8x7")


def _typo_yaml(tmp_path, good: str, bad: str) -> tuple[Path, int]:
    text = PRESETS["mixtral-8x7b"].read_text().replace(good, bad)
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    return path, text.splitlines().index(bad) + 1


def test_yaml_typo_names_file_line_and_field(tmp_path):
    path, line = _typo_yaml(tmp_path, "num_groups: 1", "num_group: 1")
    with pytest.raises(ConfigError) as err:
        load_model(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), line, "num_group")
    assert "did you mean 'num_groups'" in str(err.value)


def test_yaml_typo_of_required_field_points_at_the_typo(tmp_path):
    path, line = _typo_yaml(tmp_path, "top_k: 2", "topk: 2")
    with pytest.raises(ConfigError) as err:
        load_model(path)
    assert (err.value.line, err.value.field) == (line, "topk")
    assert "did you mean 'top_k'" in str(err.value)


@st.composite
def valid_fields(draw):
    num_groups = draw(st.sampled_from([1, 2, 4, 8]))
    experts = num_groups * draw(st.integers(1, 64))
    topk_groups = draw(st.integers(1, num_groups))
    top_k = draw(st.integers(1, topk_groups * (experts // num_groups)))
    shared = draw(st.integers(0, 2))
    return dict(hidden=draw(st.integers(1, 16384)), expert_ffn=draw(st.integers(1, 32768)),
                experts=experts, top_k=top_k, num_groups=num_groups, topk_groups=topk_groups,
                shared_experts=shared,
                shared_expert_ffn=draw(st.integers(1, 32768)) if shared else 0,
                gated=draw(st.booleans()), moe_layers=draw(st.integers(1, 128)),
                weight_dtype=draw(st.sampled_from(sorted(DTYPE_BYTES))))


@settings(max_examples=200, deadline=None)
@given(valid_fields())
def test_active_params_never_exceed_total(fields):
    model = MoEModel(**fields)
    assert model.active_moe_layer_params() <= model.moe_layer_params()


# --- Hugging Face config.json --------------------------------------------------------------

HF_FILES = sorted(HF_DIR.glob("*.json"))


def test_hf_fixtures_cover_six_families():
    types = {json.loads(p.read_text()).get("model_type") for p in HF_FILES}
    assert len(types) >= 6, types


@pytest.mark.parametrize("path", HF_FILES, ids=lambda p: p.stem)
def test_hf_config_matches_preset(path):
    model, preset = load_model(path), load_model(path.stem)
    assert model.name == path.stem
    fields = {f: getattr(model, f) for f in MODEL_FIELDS}
    assert fields == {f: getattr(preset, f) for f in MODEL_FIELDS}


def test_hf_config_accepts_overrides():
    assert load_model(HF_DIR / "mixtral-8x7b.json", experts=16).experts == 16


def _write(tmp_path, data, name="config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _fixture(stem) -> dict:
    return json.loads((HF_DIR / f"{stem}.json").read_text())


def test_hf_missing_field_names_file_field_and_expectation(tmp_path):
    data = _fixture("mixtral-8x7b")
    del data["num_local_experts"]
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        model_from_hf_config(path)
    assert (err.value.file, err.value.field) == (str(path), "num_local_experts")
    assert "missing; expected the number of routed experts" in str(err.value)


def test_hf_missing_nested_field_names_the_path(tmp_path):
    data = _fixture("dbrx")
    del data["ffn_config"]["moe_top_k"]
    with pytest.raises(ConfigError) as err:
        model_from_hf_config(_write(tmp_path, data))
    assert err.value.field == "ffn_config.moe_top_k"


@pytest.mark.parametrize("change, field, expected", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "model_type", "mixtral"),
    ({"model_type": "mixtrall", "architectures": []}, "model_type", "did you mean 'mixtral'"),
    ({"num_experts_per_tok": "2"}, "num_experts_per_tok", "an integer >= 1"),
    ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quant_method",
     "expected one of: awq, fp8, gptq, modelopt, mxfp4"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 3}}, "quantization_config.bits",
     "expected 4 or 8"),
    ({"torch_dtype": "int3"}, "torch_dtype", "expected one of"),
])
def test_hf_bad_values_are_config_errors(tmp_path, change, field, expected):
    path = _write(tmp_path, {**_fixture("mixtral-8x7b"), **change})
    with pytest.raises(ConfigError) as err:
        model_from_hf_config(path)
    assert str(path) in str(err.value) and field in str(err.value) and expected in str(err.value)


def test_hf_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "model_type": "mixtral",\n  oops\n}')
    with pytest.raises(ConfigError) as err:
        model_from_hf_config(path)
    assert err.value.line == 3


def test_hf_dispatch_falls_back_to_architectures_and_name_or_path(tmp_path):
    data = {k: v for k, v in _fixture("olmoe-1b-7b").items() if k != "model_type"}
    data["_name_or_path"] = "allenai/OLMoE-1B-7B-0924/"
    model = model_from_hf_config(_write(tmp_path, data))
    assert model.name == "allenai/OLMoE-1B-7B-0924" and model.experts == 64


def test_gpt_oss_experts_per_token_alone_is_top_k(tmp_path):
    data = _fixture("gpt-oss-120b")
    del data["num_experts_per_tok"]
    assert model_from_hf_config(_write(tmp_path, data)).top_k == 4
    data["num_experts_per_tok"] = 2
    with pytest.raises(ConfigError, match="disagrees"):
        model_from_hf_config(_write(tmp_path, data))


def test_qwen_sparse_step_and_mlp_only_layers(tmp_path):
    data = {**_fixture("qwen3-30b-a3b"), "decoder_sparse_step": 2, "mlp_only_layers": [1, 2]}
    model = model_from_hf_config(_write(tmp_path, data))
    assert (model.moe_layers, model.dense_layers) == (23, 25)  # odd layers 1..47, minus layer 1


def test_deepseek_layer_frequency_and_greedy_groups(tmp_path):
    data = {**_fixture("deepseek-v3"), "moe_layer_freq": 2}
    model = model_from_hf_config(_write(tmp_path, data))
    assert (model.moe_layers, model.dense_layers) == (29, 32)  # even layers 4..60
    data = {**_fixture("deepseek-v2-lite"), "n_group": 8, "topk_group": 3}
    assert model_from_hf_config(_write(tmp_path, data)).num_groups == 1  # greedy ignores groups


def test_llama4_explicit_moe_layers_win(tmp_path):
    data = _fixture("llama4-maverick")
    data["text_config"]["moe_layers"] = [0, 47]
    model = model_from_hf_config(_write(tmp_path, data))
    assert (model.moe_layers, model.dense_layers, model.shared_experts) == (2, 46, 1)
