"""Storage formats users deploy: bytes per parameter with their scales, the arithmetic each
implies, and Hugging Face ``quantization_config`` mapped onto them."""
import json

import pytest

import moesim
from moesim.config import ConfigError, dtypes
from moesim.config.model import load_model


@pytest.mark.parametrize("name, per_param, compute", [
    ("fp8", 1 + 4 / (128 * 128), "fp8"),  # DeepSeek-V3: one fp32 scale per 128x128 block
    ("fp8-tensor", 1.0, "fp8"),
    ("mxfp4", 0.5 + 1 / 32, "fp4"),  # e8m0 per 32 (OCP MX v1.0)
    ("nvfp4", 0.5 + 1 / 16, "fp4"),  # e4m3 per 16 (+ one fp32 per tensor)
    ("int4-g128", 0.5 + 2.5 / 128, None),  # fp16 scale + packed 4-bit zero per 128
    ("int4-g32", 0.5 + 2.5 / 32, None),
    ("bf16", 2.0, "bf16"),
])
def test_weight_bytes_per_param_and_implied_compute(name, per_param, compute):
    assert dtypes.weight_bytes_per_param(name) == pytest.approx(per_param, rel=1e-12)
    assert dtypes.compute_dtype(name, None, "bf16") == (compute or "bf16")
    assert dtypes.compute_dtype(name, "int8", "bf16") == "int8"  # w4a8 when asked


def test_fp8_tokens_keep_deepep_per_128_scales():
    assert dtypes.token_bytes("fp8", 7168) == 7168 + 7168 // 128 * 4
    assert dtypes.token_bytes("fp8-tensor", 7168) == 7168


def test_deepseek_v3_fp8_weights_carry_block_not_token_scales():
    """Decode of one token reads the expert weights: fp8 block scales add 4/16384 = 0.024 %, not
    the 3.1 % of per-128-element scales."""
    block = moesim.predict("deepseek-v3", "h200-sxm", tokens=1, ep=8)
    tensor = moesim.predict("deepseek-v3", "h200-sxm", tokens=1, ep=8, weight_dtype="fp8-tensor")
    extra = block.hbm_bytes / tensor.hbm_bytes - 1
    assert 0 < extra < 4 / (128 * 128)
    assert block.breakdown_s["experts"] / tensor.breakdown_s["experts"] - 1 < 3e-4


def test_weight_only_int4_computes_in_the_activation_dtype():
    r = moesim.predict("mixtral-8x7b", "h100-sxm", tokens=1, weight_dtype="int4-g128")
    bf16 = moesim.predict("mixtral-8x7b", "h100-sxm", tokens=1)
    # one decode token's bytes are its experts' weights: 0.52 / 2 of the bf16 bytes; the GEMMs
    # still run at the bf16 peak, so the layer is not 4x faster
    assert r.hbm_bytes / bf16.hbm_bytes == pytest.approx((0.5 + 2.5 / 128) / 2, rel=0.02)
    assert r.breakdown_s["experts"] / bf16.breakdown_s["experts"] > 0.5
    assert load_model("mixtral-8x7b", weight_dtype="int4-g128").gemm_dtype == "bf16"


def test_bad_dtype_names_the_known_formats():
    with pytest.raises(ConfigError, match="nvfp4.*int4-gN"):
        load_model("mixtral-8x7b", weight_dtype="nvfp5")
    with pytest.raises(ConfigError, match="compute dtype"):
        load_model("mixtral-8x7b", compute_dtype="mxfp4")


def _hf(tmp_path, quant: dict, torch_dtype="bfloat16"):
    from tests.test_models import _fixture

    data = {**_fixture("mixtral-8x7b"), "torch_dtype": torch_dtype, "quantization_config": quant}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return load_model(path)


@pytest.mark.parametrize("quant, torch_dtype, expected", [
    ({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}, "bfloat16",
     dict(weight_dtype="fp8", dispatch_dtype="fp8", gemm_dtype="fp8")),
    ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "bfloat16",
     dict(weight_dtype="fp8-tensor", gemm_dtype="fp8")),
    ({"quant_method": "mxfp4"}, "bfloat16", dict(weight_dtype="mxfp4", gemm_dtype="bf16")),
    ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}, "float16",
     dict(weight_dtype="int4-g128", activation_dtype="fp16", gemm_dtype="fp16")),
    ({"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemm"}, "float16",
     dict(weight_dtype="int4-g64", gemm_dtype="fp16")),
    ({"quant_method": "gptq", "bits": 4, "group_size": -1}, "float16",
     dict(weight_dtype="int4", gemm_dtype="fp16")),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16}, "bfloat16",
     dict(weight_dtype="nvfp4", gemm_dtype="fp4")),
])
def test_hf_quantization_config_maps_onto_formats(tmp_path, quant, torch_dtype, expected):
    model = _hf(tmp_path, quant, torch_dtype)
    for field, value in expected.items():
        assert getattr(model, field) == value, field
