"""The measured device: parse ``--device``, fix the thread count, and record device facts.

Facts go with every run (provenance): through pynvml on NVIDIA GPUs (name, memory, clocks, power
limit, active NVLink links, driver), the CPU model, core and thread counts otherwise; always the
torch, Python and moesim versions, the host name and the load average.
"""
from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

from moesim.config.errors import ConfigError


def parse_device(spec: str):
    """``cpu``, ``cuda`` or ``cuda:N`` as a ``torch.device``; a device that is not there is a
    ConfigError naming the field ``--device``."""
    import torch

    text = str(spec).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2] or "0"
        if not index.isdigit():
            raise ConfigError(f"expected 'cuda:N' with an integer N, got '{spec}'",
                              field="--device")
        if not torch.cuda.is_available():
            raise ConfigError(f"'{spec}' requested but torch {torch.__version__} sees no CUDA "
                              "device (CPU-only build or no GPU); use --device cpu",
                              field="--device")
        count = torch.cuda.device_count()
        if int(index) >= count:
            raise ConfigError(f"'{spec}' requested but only {count} CUDA device(s) exist "
                              f"(cuda:0..cuda:{count - 1})", field="--device")
        return torch.device("cuda", int(index))
    raise ConfigError(f"unknown device '{spec}'; expected cpu, cuda or cuda:N", field="--device")


def set_threads(device, threads: int | None) -> int:
    """Fix torch's intra-op threads (CPU: ``threads`` or every usable core); returns the count."""
    import torch

    if device.type == "cpu":
        usable = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count())
        count = threads or usable or 1
        if count < 1:
            raise ConfigError(f"expected a thread count >= 1, got {count}", field="--threads")
        torch.set_num_threads(count)
    return torch.get_num_threads()


def cpu_model() -> str:
    """This machine's CPU model name (``/proc/cpuinfo``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: /proc/cpuinfo flags that decide CPU GEMM speed per dtype (AVX-512, native bf16/fp16, AMX).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
             "amx_bf16", "amx_tile", "amx_int8")


def _cpu_id() -> dict:
    """``cpu_flags`` (the :data:`ISA_FLAGS` present) and ``cpu_family_model`` from cpuinfo."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    fields = dict(ln.split(":", 1) for ln in first.splitlines() if ":" in ln)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    out = {"cpu_flags": [f for f in ISA_FLAGS if f in flags]}
    if "cpu family" in fields and "model" in fields:
        out["cpu_family_model"] = f"{fields['cpu family']}/{fields['model']}"
    return out


def cpu_facts() -> dict:
    import torch

    facts = {"cpu_model": cpu_model(), **_cpu_id(), "logical_cpus": os.cpu_count(),
             "torch_threads": torch.get_num_threads(),
             "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "mkldnn_available": bool(torch.backends.mkldnn.is_available())}
    try:
        facts["memory_total_bytes"] = int(
            next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                 if ln.startswith("MemTotal")).split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        pass
    if hasattr(os, "getloadavg"):
        facts["load_average_1m"] = round(os.getloadavg()[0], 2)
    return facts


def nvml_facts(index: int) -> dict:
    """NVIDIA GPU facts via pynvml; an empty dict with the reason when NVML is unavailable."""
    try:
        import pynvml
    except ImportError:
        return {"nvml": "pynvml not installed"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"nvml": f"unavailable: {exc}"}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(h)
        facts = {
            "gpu_name": name.decode() if isinstance(name, bytes) else name,
            "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
            "driver_version": _text(pynvml.nvmlSystemGetDriverVersion()),
            "sm_clock_max_hz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM) * 1e6,
            "mem_clock_max_hz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM) * 1e6,
            "sm_clock_now_hz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM) * 1e6,
            "power_limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1e3,
            "nvlink_active_links": _nvlinks(pynvml, h),
        }
    except pynvml.NVMLError as exc:
        facts = {"nvml": f"query failed: {exc}"}
    finally:
        pynvml.nvmlShutdown()
    return facts


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvlinks(pynvml, handle) -> int:
    active = 0
    for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            state = pynvml.nvmlDeviceGetNvLinkState(handle, link)
            active += int(state == pynvml.NVML_FEATURE_ENABLED)
        except pynvml.NVMLError:
            break
    return active


def device_facts(device) -> dict:
    """Everything worth knowing to compare two runs: device, versions, host."""
    import torch

    from moesim import __version__

    facts = {"device": str(device), "device_type": device.type, "torch": torch.__version__,
             "python": platform.python_version(), "moesim": __version__,
             "host": socket.gethostname(), "platform": platform.platform()}
    facts.update(cpu_facts())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update({"cuda": torch.version.cuda, "gpu_name_torch": props.name,
                      "sm_count": props.multi_processor_count,
                      "l2_cache_bytes": getattr(props, "L2_cache_size", None),
                      "compute_capability": f"{props.major}.{props.minor}"})
        facts.update(nvml_facts(device.index or 0))
    return facts


# --- which backend, timer and facts a device implies (pure: decided from the spec text) ------

DEVICE_TYPES = ("cpu", "cuda")


@dataclass(frozen=True)
class DevicePlan:
    """How a measurement runs on one kind of device.

    ``backend``: the process group's (NCCL on GPUs, gloo on CPUs); ``timer``: ``cuda-sync``
    (``PhaseTimer`` reading the host clock after ``torch.cuda.synchronize``; ``bench`` uses CUDA
    events) or ``wall`` (the host clock; CPU ops return when done); ``facts``: ``nvml`` (pynvml)
    or ``cpu`` (``/proc/cpuinfo``); ``pin_cores``/``host_malloc``: bind CPU ranks to cores and
    keep freed host memory (only where the ranks compute on the host)."""

    device_type: str
    backend: str
    timer: str
    facts: str
    pin_cores: bool
    host_malloc: bool

    def rank_device(self, local_rank: int = 0) -> str:
        """The torch device spec of the rank with this local index (one GPU per rank)."""
        return f"cuda:{local_rank}" if self.device_type == "cuda" else "cpu"


def plan_for(spec: str) -> DevicePlan:
    """The :class:`DevicePlan` of ``cpu``, ``cuda`` or ``cuda:N`` (a ConfigError otherwise)."""
    kind = str(spec).strip().lower().partition(":")[0]
    if kind == "cuda":
        return DevicePlan("cuda", "nccl", "cuda-sync", "nvml", False, False)
    if kind == "cpu":
        return DevicePlan("cpu", "gloo", "wall", "cpu", True, True)
    raise ConfigError(f"unknown device '{spec}'; expected cpu, cuda or cuda:N", field="--device")


def profile_device_facts(profile, load=None) -> dict:
    """The device facts a calibrated profile was measured with (``provenance.device_facts``,
    else its ``base``'s); {} for a datasheet profile."""
    facts = (profile.provenance or {}).get("device_facts")
    if facts or profile.kind == "datasheet":
        return dict(facts or {})
    base = profile.base or (profile.provenance or {}).get("base")
    if base is None:
        return {}
    if load is None:
        from moesim.config import load_profile as load
    return profile_device_facts(load(base), load)


def profile_device_type(profile, load=None) -> str:
    """``cpu`` or ``cuda``: the kind of device a hardware profile describes. A calibrated
    profile says it in ``provenance.device_facts.device_type`` (or its ``base`` does); a
    datasheet profile is the CPU one when its name or its base chain is ``cpu``, a GPU
    otherwise (every other shipped datasheet profile is a GPU)."""
    kind = profile_device_facts(profile, load).get("device_type")
    if kind in DEVICE_TYPES:
        return kind
    if profile.name == "cpu" or profile.base == "cpu":
        return "cpu"
    if profile.kind == "calibrated" and profile.base:
        if load is None:
            from moesim.config import load_profile as load
        return profile_device_type(load(profile.base), load)
    return "cuda"


def measuring_device(requested: str | None, profile_types: dict[str, str]) -> str:
    """The device spec a measurement runs on: ``requested`` (``--device``) or, without it, the
    one kind every profile names. A ConfigError when a profile's kind differs from it."""
    kinds = sorted(set(profile_types.values()))
    if not profile_types:
        return requested or "cpu"
    if requested is None:
        if len(kinds) != 1:
            raise ConfigError(f"the scenario's profiles describe {' and '.join(kinds)} devices "
                              "(" + ", ".join(f"{n}: {k}" for n, k in profile_types.items()) +
                              "); measure one kind per run and name it with --device",
                              field="--device")
        return kinds[0]
    kind = plan_for(requested).device_type
    wrong = {n: k for n, k in profile_types.items() if k != kind}
    if wrong:
        raise ConfigError(f"refusing to measure on '{requested}' ({kind}) configs predicted "
                          "for " + ", ".join(f"'{n}' ({k})" for n, k in wrong.items()) +
                          ": measured and predicted times would be of different devices; use "
                          f"--device {next(iter(wrong.values()))} or a {kind} profile",
                          field="--device")
    return requested

