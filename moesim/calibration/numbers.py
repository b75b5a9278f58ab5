"""How calibration writes numbers into a profile: significant digits and GB/s for notes."""
from __future__ import annotations


def sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    return float(f"{x:.{digits}g}")


def gb(x) -> str:
    """Bytes (per second) in GB, three digits, for notes; ``n/a`` for None."""
    return "n/a" if x is None else f"{x / 1e9:.3g}"
