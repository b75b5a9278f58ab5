"""What one measured config is: its case, its key and the settings it is timed with (torch-free).

Each row of a scenario table becomes a *case* (:func:`build_case`): the resolved model, tokens
per rank, the cost model's routing ``q`` and placement, and the measurement settings; its key
is a hash of all of that (:func:`config_key`), so a rerun finds what is already measured.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from moesim.config import MODEL_FIELDS, ConfigError, MoEModel, load_model
from moesim.config.model import validate_model
from moesim.config.run import RUN_FIELDS, validate_run
from moesim.harness.device import plan_for
from moesim.harness.host import usable_cores

#: Overlap modes the measured layers run (``moesim.measure.ep.OVERLAPS`` and the two-batch
#: stack, ``moesim.measure.ep.two_batch_stack``; torch-free).
MEASURED_OVERLAPS = ("none", "shared", "two-batch")
#: Dtypes the torch layers compute in (fp8/fp4 weights have no plain torch path on CPU).
TORCH_DTYPES = ("fp32", "bf16", "fp16")


#: Weights each forward finds outside the cache by default: 2x this machine's 32 MiB L3.
DEFAULT_CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class MeasureSettings:
    """How each config is timed. ``threads``: torch threads per rank (None: the usable cores
    divided among the ranks, at least 1); ``cache_bytes``: the weights each forward must find
    outside the cache, split over the ranks (each rank rotates through copies of its layer; the
    default 64 MiB is 2x this machine's 32 MiB L3). A config during which other processes took
    more than ``max_foreign`` of the machine's CPU (``foreign_cpu_frac``) is measured again,
    up to ``attempts`` times in all. ``passes``: clean measurements per config, in separate
    passes over the table; the quietest is kept (see ``moesim.measure.runner``).
    ``reuse_memory``: freed host memory is reused (no fresh, page-faulted buffers per forward;
    ``moesim.harness.launch.reuse_freed_memory``). ``timeout_s``: how long one config may run
    (a worker with no new record for that long is stopped). ``device``: ``cpu`` or ``cuda``
    (one GPU per rank); None: the kind the measured rows' profiles describe
    (:func:`resolve_device`)."""

    repeats: int = 20
    warmup: int = 3
    threads: int | None = 1
    cache_bytes: int = DEFAULT_CACHE_BYTES
    timeout_s: float = 600.0
    max_foreign: float = 0.10
    attempts: int = 3
    reuse_memory: bool = True
    passes: int = 1
    device: str | None = None

    def __post_init__(self):
        if self.passes < 1:
            raise ConfigError(f"expected passes >= 1, got {self.passes}", field="--passes")
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigError(f"need repeats >= 1 and warmup >= 0, got {self.repeats}, "
                              f"{self.warmup}", field="--repeats")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"expected threads >= 1, got {self.threads}", field="--threads")
        if not self.timeout_s > 0:
            raise ConfigError(f"expected a per-config timeout > 0 s, got {self.timeout_s}",
                              field="--timeout-s")
        if self.device is not None:
            plan_for(self.device)  # a ConfigError for an unknown device

    def threads_for(self, ep: int) -> int:
        if self.device_type == "cuda":  # ranks feed GPUs: one host thread each
            return self.threads or 1
        return self.threads or max(1, usable_cores() // ep)

    def key_fields(self, ep: int) -> dict:
        """What a measurement depends on (its key); the device only where it is not the CPU,
        so keys of CPU measurements made before devices were named stay valid."""
        fields = {"repeats": self.repeats, "warmup": self.warmup, "threads": self.threads_for(ep),
                  "cache_bytes": self.cache_bytes, "reuse_memory": self.reuse_memory}
        if self.device_type != "cpu":
            fields["device"] = self.device_type
        return fields

    @property
    def device_type(self) -> str:
        return str(self.device or "cpu").partition(":")[0]


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def row_model(row: dict) -> MoEModel:
    """The row's model: its own model-field columns over its preset (``model`` column)."""
    fields = {k: _plain(row[k]) for k in MODEL_FIELDS if k in row and _plain(row[k]) is not None}
    name = row.get("model", "custom")
    if name in (None, "custom") or all(k in fields for k in MODEL_FIELDS if k != "compute_dtype"):
        return validate_model(fields)
    return load_model(name, **fields)


def row_run(row: dict):
    return validate_run({k: _plain(row[k]) for k in RUN_FIELDS
                         if k in row and _plain(row[k]) is not None})


def check_measurable(model: MoEModel, run) -> str:
    """The torch dtype name the layer runs in; a ConfigError for what the layers cannot run."""
    if run.overlap not in MEASURED_OVERLAPS:
        raise ConfigError(f"overlap '{run.overlap}' is not implemented by the measured layers; "
                          f"expected one of {', '.join(MEASURED_OVERLAPS)}", field="overlap")
    if run.a2a_kernel not in ("all-to-all-v", "per-expert"):
        raise ConfigError(f"a2a_kernel '{run.a2a_kernel}' is not implemented by the measured "
                          "layers (EPMoELayer sends one row per (token, expert) with "
                          "all_to_all_single and uneven splits); expected all-to-all-v "
                          "(per-expert predicts the same bytes without the count exchange)",
                          field="a2a_kernel")
    dtypes = {model.gemm_dtype, model.activation_dtype, model.dispatch_dtype, model.combine_dtype}
    if len(dtypes) != 1 or model.gemm_dtype not in TORCH_DTYPES:
        raise ConfigError(f"the measured layers run in one dtype; expected weight/compute, "
                          f"activation, dispatch and combine dtypes all equal to one of "
                          f"{', '.join(TORCH_DTYPES)}, got {sorted(d for d in dtypes if d)}",
                          field="weight_dtype")
    return model.gemm_dtype


def config_key(model: MoEModel, run, settings: MeasureSettings) -> str:
    """16 hex digits of SHA-256 over the model fields, run fields and timing settings."""
    payload = {"model": {k: getattr(model, k) for k in MODEL_FIELDS},
               "run": run.model_dump(), "settings": settings.key_fields(run.ep)}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_case(row: dict, settings: MeasureSettings) -> dict:
    """The worker's case for one row: model, tokens per rank, the cost model's ``q`` and
    placement, seeds and timing settings."""
    from moesim.inputs import build_placement, inclusion_probs

    model, run = row_model(row), row_run(row)
    dtype = check_measurable(model, run)
    q = inclusion_probs(run.routing, model.experts, model.top_k, run.seed)
    placement = build_placement(run.placement, model.experts, run.ep, q)
    return {"key": config_key(model, run, settings), "ep": run.ep, "tokens": run.tokens,
            "model": {k: getattr(model, k) for k in MODEL_FIELDS}, "dtype": dtype,
            "q": q.tolist(), "placement": placement.as_lists(), "seed": run.seed,
            "overlap": run.overlap,
            "warmup": settings.warmup, "repeats": settings.repeats,
            "reuse_memory": settings.reuse_memory, "device": settings.device_type,
            "cache_bytes": settings.cache_bytes // run.ep}


def settings_dict(settings: MeasureSettings) -> dict:
    return {**asdict(settings), "usable_cores": usable_cores()}


def resolve_device(settings: MeasureSettings,
                   hardware: list[str]) -> tuple[MeasureSettings, str | None]:
    """(``settings`` with the measuring device, a warning or None). The device is
    ``settings.device`` or, when None, the one kind of device the ``hardware`` profiles
    describe; a ConfigError when a profile describes another kind (measured and predicted
    times would be of different devices) or a CUDA device is not there. On a GPU the default
    ``cache_bytes`` becomes twice its L2 cache (the last level there). The warning names CPU
    profiles calibrated on another CPU model than this machine's."""
    from dataclasses import replace

    from moesim.config import load_profile
    from moesim.harness import device, machine

    profiles = {name: load_profile(name) for name in dict.fromkeys(hardware)}
    kinds = {name: device.profile_device_type(p) for name, p in profiles.items()}
    chosen = device.measuring_device(settings.device, kinds)
    if plan_for(chosen).device_type == "cuda":
        import torch

        gpu = device.parse_device(chosen)  # a ConfigError when torch sees no such GPU
        l2 = getattr(torch.cuda.get_device_properties(gpu), "L2_cache_size", 0)
        if l2 and settings.cache_bytes == DEFAULT_CACHE_BYTES:  # 2x the GPU's last level
            settings = replace(settings, cache_bytes=2 * int(l2))
        return replace(settings, device=chosen), None
    here = {"device_type": "cpu", **device.cpu_facts()}
    lines = [line for p in profiles.values() for line in machine.mismatches(
        p, here, settings.threads, recorded=device.profile_device_facts(p))]
    return replace(settings, device=chosen), "; ".join(lines) or None
