"""Numeric formats: bytes per element with their scale factors, and the arithmetic they imply.

Two kinds of names:

- arithmetic dtypes (:data:`DTYPE_BYTES`): what GEMMs compute in and what hardware profiles give
  peaks for: ``fp32``, ``tf32``, ``bf16``, ``fp16``, ``fp8``, ``int8``, ``fp4``;
- storage formats (:data:`FORMATS`): how weights and tokens are stored, with their scales. Each
  names the arithmetic dtype it implies (``compute``; ``None``: the activation dtype, as for
  weight-only int4).

Scale overhead (bytes per element = payload + scale bytes / elements per scale):

==============  =====================================================  ==================  =======
format          scales                                                 bytes/element       compute
==============  =====================================================  ==================  =======
``fp8``         weights: fp32 per 128x128 block; tokens: fp32 per 128  1 + 4/16384; 1+4/128  fp8
``fp8-tensor``  one fp32 per tensor (negligible)                       1                   fp8
``mxfp4``       e8m0 (1 B) per 32 elements                             0.5 + 1/32          fp4
``nvfp4``       fp8 e4m3 (1 B) per 16 elements + one fp32 per tensor   0.5 + 1/16          fp4
``int4-gN``     fp16 scale + packed 4-bit zero point per N elements    0.5 + 2.5/N         act.
``fp4``         as ``mxfp4`` (kept for older configs)                  0.5 + 1/32          fp4
==============  =====================================================  ==================  =======

Sources: ``fp8`` is DeepSeek-V3's fine-grained FP8 (DeepSeek-V3 Technical Report,
arXiv:2412.19437, sec. 3.3.1: 1x128 tile-wise activation scales, 128x128 block-wise weight
scales; config.json ``weight_block_size [128, 128]``; DeepEP counts ``hidden + hidden/128*4``
bytes per FP8 token). ``mxfp4``: OCP Microscaling Formats (MX) Specification v1.0 (block of 32,
E8M0 shared scale); gpt-oss ships MoE weights in MXFP4. ``nvfp4``: NVIDIA, "Introducing NVFP4
for Efficient and Accurate Low-Precision Inference" (2025): 16-element micro-blocks with an FP8
E4M3 scale, plus a per-tensor FP32 scale. ``int4-gN``: GPTQ (Frantar et al. 2022) and AWQ (Lin
et al. 2023) checkpoints as AutoGPTQ/AutoAWQ store them: int4 weights packed 8 per int32,
``scales`` fp16 and ``qzeros`` packed 4-bit per group of ``group_size`` input channels;
``int4`` (no group) is per output channel, scales negligible. Weight-only int4 computes in the
activation dtype (w4a16); set ``compute_dtype: int8`` or ``fp8`` for w4a8 kernels.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from moesim.config.errors import ConfigError, unknown

#: Bytes per element of the arithmetic dtypes (hardware peaks are given for these names).
#: fp8 is e4m3/e5m2; fp4 is e2m1 (MXFP4/NVFP4 payload, half a byte).
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "tf32": 4.0,  # stored as fp32, computed as tf32
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "fp4": 0.5,
}


@dataclass(frozen=True)
class Format:
    """A storage format: ``payload`` bytes per element; one scale of ``scale_bytes`` per
    ``weight_block`` weight elements and per ``token_block`` elements of a token vector
    (0: no such scales); ``compute``: the arithmetic dtype it implies (None: activations')."""

    payload: float
    weight_block: int = 0
    token_block: int = 0
    scale_bytes: float = 0.0
    compute: str | None = None


FORMATS: dict[str, Format] = {
    **{name: Format(size, compute=name) for name, size in DTYPE_BYTES.items()},
    "fp8": Format(1.0, weight_block=128 * 128, token_block=128, scale_bytes=4.0, compute="fp8"),
    "fp8-tensor": Format(1.0, compute="fp8"),
    "mxfp4": Format(0.5, weight_block=32, token_block=32, scale_bytes=1.0, compute="fp4"),
    "nvfp4": Format(0.5, weight_block=16, token_block=16, scale_bytes=1.0, compute="fp4"),
    "fp4": Format(0.5, weight_block=32, token_block=32, scale_bytes=1.0, compute="fp4"),
    "int4": Format(0.5, compute=None),
}
_GROUPED_INT4 = re.compile(r"int4-g([1-9][0-9]*)$")
#: What error messages list (``int4-gN`` stands for any group size N).
KNOWN = tuple(FORMATS) + ("int4-gN",)


def storage_format(name: str, field: str = "dtype") -> Format:
    """The :class:`Format` called ``name``; an unknown name is a ConfigError naming ``field``."""
    if name in FORMATS:
        return FORMATS[name]
    match = _GROUPED_INT4.match(str(name))
    if match:
        return Format(0.5, weight_block=int(match.group(1)), scale_bytes=2.5, compute=None)
    raise ConfigError(unknown("dtype", name, KNOWN), field=field)


def check_dtype(name: str, field: str = "dtype") -> str:
    storage_format(name, field)
    return name


def check_compute_dtype(name: str, field: str = "compute_dtype") -> str:
    if name not in DTYPE_BYTES:
        raise ConfigError(unknown("compute dtype", name, DTYPE_BYTES), field=field)
    return name


def bytes_per_element(name: str) -> float:
    """Payload bytes per element (scales excluded)."""
    return storage_format(name).payload


def weight_bytes_per_param(name: str) -> float:
    """Bytes per weight parameter including its block scales (``fp8``: 1 + 4/16384)."""
    fmt = storage_format(name)
    return fmt.payload + (fmt.scale_bytes / fmt.weight_block if fmt.weight_block else 0.0)


def weight_bytes(name: str, params: float) -> float:
    """Bytes of ``params`` weights stored in ``name``, scales included."""
    return params * weight_bytes_per_param(name)


def token_bytes(name: str, elements):
    """Bytes of a token vector of ``elements`` values in ``name`` including its per-block scales
    (``fp8``: ``elements + ceil(elements / 128) * 4``, DeepEP's FP8 token)."""
    fmt = storage_format(name)
    payload = elements * fmt.payload
    if fmt.token_block:
        payload = payload + -(-elements // fmt.token_block) * fmt.scale_bytes
    return payload


def compute_dtype(weight: str, compute: str | None, activation: str) -> str:
    """The GEMMs' arithmetic dtype: ``compute`` if given, else what the weight format implies
    (weight-only formats compute in the activation dtype)."""
    if compute is not None and compute == compute:  # NaN from a DataFrame means unset
        return compute
    implied = storage_format(weight, "weight_dtype").compute
    return implied if implied is not None else activation
