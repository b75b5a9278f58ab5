"""AIConfigurator's quantisation names mapped onto moesim's cost inputs.

Each AIC dtype (``gemm_dtype`` / ``moe_dtype`` column) becomes: the efficiency-table key moesim
writes, the peak it computes at (the tensor-core format of the GEMM's inner loop), bytes per
weight and per activation element including block scales. Sources: NVFP4 = e2m1 with one fp8
scale per 16 elements (NVIDIA Blackwell NVFP4 format); MXFP4 = e2m1 with one e8m0 scale per 32
(OCP Microscaling v1.0); fp8 block = DeepSeek-V3's 128x128 weight / 1x128 activation fp32 scales;
int4 weight-only = AWQ/GPTQ group 128 with a bf16 scale. Weight-only formats (w4a16) dequantise
to bf16 and run bf16 tensor cores; w4a8 (MXFP4 weights, MXFP8 activations) runs fp8 tensor cores.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AicDtype:
    key: str  # efficiency-table key written into profiles
    peak: str  # moesim peak_flops_per_s entry the GEMM runs at
    weight_bytes: float  # per weight element incl. scales
    act_bytes: float  # per activation element entering the GEMM incl. scales
    grid: str  # dense-GEMM grid it reads (weight-only formats have no dense table)


DTYPES: dict[str, AicDtype] = {
    "bfloat16": AicDtype("bf16", "bf16", 2.0, 2.0, "bf16"),
    "fp8": AicDtype("fp8", "fp8", 1.0, 1.0, "fp8"),
    "fp8_block": AicDtype("fp8_block", "fp8", 1.0 + 4.0 / 16384, 1.0 + 4.0 / 128, "fp8_block"),
    "nvfp4": AicDtype("nvfp4", "fp4", 0.5 + 1.0 / 16, 0.5 + 1.0 / 16, "nvfp4"),
    "w4a16_mxfp4": AicDtype("w4a16_mxfp4", "bf16", 0.5 + 1.0 / 32, 2.0, "bf16"),
    "w4a8_mxfp4_mxfp8": AicDtype("w4a8_mxfp4_mxfp8", "fp8", 0.5 + 1.0 / 32, 1.0 + 1.0 / 32,
                                 "fp8"),
    "int4_wo": AicDtype("int4_wo", "bf16", 0.5 + 2.0 / 128, 2.0, "bf16"),
    # int8 weight-only (w8a16, per-channel scales: negligible bytes per weight)
    "int8_wo": AicDtype("int8_wo", "bf16", 1.0, 2.0, "bf16"),
}

#: moesim dtype names (config/dtypes.py) that read an AIC grid of another name
MOESIM_ALIASES = {"fp16": "bf16", "fp4": "nvfp4"}


def lookup(name: str) -> AicDtype:
    if name not in DTYPES:
        raise KeyError(f"AIConfigurator dtype '{name}' has no moesim mapping "
                       f"(known: {', '.join(sorted(DTYPES))})")
    return DTYPES[name]


def mapped(df, column: str):
    """(rows whose ``column`` dtype moesim maps, sorted names of the dtypes left out): a
    table may hold formats moesim has no cost for (e.g. ``sq``, SmoothQuant W8A8, on A100);
    they are left out of fits and validations, and the caller records which."""
    known = df[column].isin(list(DTYPES))
    return df[known], sorted(set(df.loc[~known, column].astype(str)))
