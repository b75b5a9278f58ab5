"""Numeric formats: bytes per element and the scale overhead of block-scaled formats."""
from __future__ import annotations

from moesim.config.errors import ConfigError, unknown

#: Bytes per element. fp8 is e4m3/e5m2; fp4 is e2m1 (MXFP4/NVFP4 payload, half a byte).
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "tf32": 4.0,  # stored as fp32, computed as tf32
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "fp4": 0.5,
}

#: Elements that share one scale factor, and the scale's size in bytes, for block-scaled formats.
#: fp8: DeepSeek-V3 / DeepEP use one fp32 scale per 128 channels (hidden/128*4 bytes per token).
#: fp4: MXFP4 (OCP Microscaling spec v1.0) uses one e8m0 byte per 32 elements.
BLOCK_SCALE: dict[str, tuple[int, float]] = {
    "fp8": (128, 4.0),
    "fp4": (32, 1.0),
}


def check_dtype(name: str, field: str = "dtype") -> str:
    if name not in DTYPE_BYTES:
        raise ConfigError(unknown("dtype", name, DTYPE_BYTES), field=field)
    return name


def bytes_per_element(name: str) -> float:
    """Payload bytes per element (scales excluded)."""
    return DTYPE_BYTES[check_dtype(name)]


def bytes_with_scales(name: str, elements: float) -> float:
    """Bytes of ``elements`` values in ``name`` including block-scale factors."""
    payload = elements * DTYPE_BYTES[check_dtype(name)]
    if name in BLOCK_SCALE:
        block, scale_bytes = BLOCK_SCALE[name]
        payload += -(-elements // block) * scale_bytes
    return payload
