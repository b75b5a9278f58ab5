"""The run field ``a2a_impl``: which cost law prices dispatch and combine.

``link`` (default): the profile's ``scale_up`` / ``scale_out`` links (latency, bandwidth x
efficiency; :func:`moesim.core.comm.alltoall`). Any other value names a kernel family ``F`` of
the profile's ``alltoall_kernels``: ``F/dispatch`` and ``F/combine``, or ``F/alltoall`` for both
directions (NCCL), each ``t = latency_s + bytes / bandwidth_bytes_per_s`` on its link class,
fitted by ``moesim calibrate --from-aic`` to AIConfigurator's measured communication tables
(:mod:`moesim.calibration.aic.comm_fit`; each entry's ``note`` names its table and fit quality).
DeepEP kernels: github.com/deepseek-ai/DeepEP (normal = throughput kernels, ll = low-latency).
"""
from __future__ import annotations

from moesim.config.errors import ConfigError, suggest
from moesim.core.comm import KernelLaw

LINK = "link"
#: Payload bytes per hidden element the DeepEP fits count (``comm_fit.deepep_bytes``: bf16).
DEEPEP_FIT_BYTES_PER_ELEMENT = 2.0


def families(hw) -> dict[str, tuple[str, str]]:
    """Kernel families of profile ``hw``: name -> (dispatch entry, combine entry)."""
    kernels = hw.alltoall_kernels
    out = {}
    for key in kernels:
        family, _, direction = key.partition("/")
        if direction == "alltoall":
            out[family] = (key, key)
        elif direction == "dispatch" and f"{family}/combine" in kernels:
            out.setdefault(family, (key, f"{family}/combine"))
    return out


def kernel_laws(hw, impl: str) -> tuple[KernelLaw | None, KernelLaw | None]:
    """(dispatch law, combine law) of ``a2a_impl = impl`` on profile ``hw``; ``(None, None)``
    for ``link``. An unknown family is a ``ConfigError`` listing the profile's families."""
    if impl == LINK:
        return None, None
    known = families(hw)
    if impl not in known:
        if not known:
            raise ConfigError(
                f"unknown a2a_impl '{impl}': hardware '{hw.name}' has no alltoall_kernels "
                f"(a {hw.kind} profile), so only '{LINK}' applies; calibrate a profile with "
                "`moesim calibrate --from-aic` for fitted kernel families", field="a2a_impl")
        choices = [LINK] + sorted(known)
        raise ConfigError(
            f"unknown a2a_impl '{impl}'{suggest(impl, choices)}; hardware '{hw.name}' has: "
            f"{', '.join(choices)}", field="a2a_impl")
    return tuple(_law(impl, hw.alltoall_kernels[key]) for key in known[impl])


def _law(family: str, kernel) -> KernelLaw:
    """DeepEP fits count ``2 * hidden`` bytes per token copy; the others the message bytes."""
    basis = DEEPEP_FIT_BYTES_PER_ELEMENT if family.startswith("deepep") else None
    return KernelLaw(kernel.link, kernel.latency_s, kernel.bandwidth_bytes_per_s, basis)
