"""Which machine a calibrated profile describes, and whether it is the machine at hand.

A calibrated CPU profile holds one machine's measured rates: its CPU (model, family/model
numbers, the ISA flags that decide GEMM speed per dtype: AVX-512, native bf16, AMX) and the
torch threads per rank it ran with. ``describe`` writes that into the profile's description
(never the base's text, which names the datasheet machine); ``mismatches`` compares a profile's
recorded facts with the facts of the machine about to measure (``harness.device.device_facts``)
and says what differs, for ``moesim measure`` to warn. Pure: dicts in, strings out.
"""
from __future__ import annotations

#: device facts that identify a CPU; a difference in any makes the profile another machine's
#: (``torch_cpu_capability``, e.g. AVX512 vs AVX2, is all that profiles written before
#: ``cpu_flags`` existed record of the ISA).
CPU_IDENTITY = ("cpu_model", "cpu_family_model", "cpu_flags", "torch_cpu_capability")


def describe(facts: dict, threads: int | None, base_name: str) -> str:
    """One line naming the measured machine, e.g. ``AMD EPYC (family/model 25/17; avx2 fma
    avx512f avx512_bf16; torch CPU capability AVX512), 2 logical CPUs, calibrated with 1 torch
    thread(s); peaks inherited from 'cpu'``."""
    if facts.get("device_type") not in (None, "cpu"):
        name = facts.get("gpu_name") or facts.get("gpu_name_torch") or "GPU"
        return f"{name}, calibrated on this device; peaks inherited from '{base_name}'"
    ident = []
    if facts.get("cpu_family_model"):
        ident.append(f"family/model {facts['cpu_family_model']}")
    if facts.get("cpu_flags") is not None:
        ident.append(" ".join(facts["cpu_flags"]) or "no AVX2/AVX-512")
    if facts.get("torch_cpu_capability"):
        ident.append(f"torch CPU capability {facts['torch_cpu_capability']}")
    cpus = f", {facts['logical_cpus']} logical CPUs" if facts.get("logical_cpus") else ""
    who = facts.get("cpu_model") or "unknown CPU"
    return (f"{who}{' (' + '; '.join(ident) + ')' if ident else ''}{cpus}, calibrated with "
            f"{threads if threads else '?'} torch thread(s); peaks inherited from '{base_name}'")


def recorded_facts(profile) -> dict:
    """The device facts a calibrated profile recorded (empty for datasheet profiles)."""
    prov = getattr(profile, "provenance", None) or {}
    return dict(prov.get("device_facts") or {})


def recorded_threads(profile) -> int | None:
    """Torch threads per rank the profile was calibrated with (None when not recorded)."""
    prov = getattr(profile, "provenance", None) or {}
    value = prov.get("torch_threads", recorded_facts(profile).get("torch_threads"))
    return int(value) if value else None


def mismatches(profile, facts: dict, threads_per_rank: int | None = None,
               recorded: dict | None = None) -> list[str]:
    """What differs between the machine a profile was calibrated on and this one (``facts``),
    and between its calibration threads and ``threads_per_rank``; [] when nothing does or the
    profile recorded nothing (a datasheet profile). ``recorded``: the profile's facts when they
    come from elsewhere (a derived profile inherits its base's, ``device.profile_device_facts``)."""
    mine = recorded_facts(profile) if recorded is None else recorded
    if not mine or mine.get("device_type", "cpu") != "cpu" or facts.get("device_type") != "cpu":
        return []
    out = []
    for key in CPU_IDENTITY:
        if key in mine and key in facts and _norm(mine[key]) != _norm(facts[key]):
            out.append(f"profile '{profile.name}' was calibrated on {key} {_show(mine[key])}; "
                       f"this machine has {_show(facts[key])}: calibrate this machine first "
                       f"(moesim calibrate --device cpu --quick --out ...)")
    threads = recorded_threads(profile)
    if threads and threads_per_rank and threads != threads_per_rank:
        out.append(f"profile '{profile.name}' was calibrated with {threads} torch thread(s); "
                   f"this run uses {threads_per_rank} per rank: its compute and streaming rates "
                   f"are for {threads} (calibrate with --threads {threads_per_rank})")
    return out


def _norm(value):
    return tuple(sorted(value)) if isinstance(value, (list, tuple)) else str(value).strip()


def _show(value) -> str:
    return " ".join(value) if isinstance(value, (list, tuple)) else f"'{value}'"
