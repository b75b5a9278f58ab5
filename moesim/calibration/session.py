"""One calibration run: pick the base profile, run the suite (or read its JSON), fit, write.

torch is imported only when measuring (``measure``); reading JSON and fitting need none.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from moesim.calibration.calibrate import Options, calibrate
from moesim.calibration.profile_writer import base_reference, write_profile
from moesim.config import ConfigError, HardwareProfile, load_profile
from moesim.harness.records import Measurements, load_measurements, merge, write_tables

#: GPU name fragment -> datasheet profile, for ``--base`` left out on CUDA.
GPU_BASES = (("GB200", "gb200-nvl72"), ("B200", "b200"), ("H200", "h200-sxm"),
             ("H800", "h800-sxm"), ("H100", "h100-sxm"), ("A100", "a100-sxm-80gb"),
             ("L40S", "l40s"), ("MI300X", "mi300x"))


def default_base(facts: dict) -> str:
    """The datasheet profile for the measured device; a ConfigError when none fits."""
    if facts.get("device_type") == "cpu":
        return "cpu"
    name = str(facts.get("gpu_name") or facts.get("gpu_name_torch") or "")
    for fragment, profile in GPU_BASES:
        if fragment.lower() in name.lower():
            return profile
    raise ConfigError(f"no datasheet profile known for device '{name or 'unknown'}'; pass "
                      "--base PROFILE (a name from `moesim profiles` or a YAML path)",
                      field="--base")


@dataclass
class Request:
    out: Path
    device: str = "cpu"
    base: str | None = None
    quick: bool = False
    from_json: list[str] = field(default_factory=list)
    threads: int | None = None
    raw_out: Path | None = None
    sections: tuple[str, ...] | None = None
    a2a_ranks: tuple[int, ...] | None = None
    memory_source: str = "stream"
    domain_size: int | None = None
    tile_m: int | None = None
    a2a_world: int | None = None
    name: str | None = None
    command: str = ""
    budget_s: float | None = None  # total seconds of measurement (None: the plan's caps)


def _check_out(req: Request) -> None:
    if req.out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"expected a .yaml path, got '{req.out}'", field="--out")


def measure(req: Request, base: HardwareProfile) -> Measurements:
    """Run the suite on ``req.device`` (torch imported here)."""
    from moesim.harness.device import parse_device, set_threads
    from moesim.harness.microbench.common import TORCH_DTYPES
    from moesim.harness.microbench.plan import make_plan
    from moesim.harness.microbench.suite import SECTIONS, run_suite

    device = parse_device(req.device)
    threads = set_threads(device, req.threads)
    dtypes = tuple(d for d in ("bf16", "fp16", "fp32") if d in base.compute.peak_flops_per_s
                   and d in TORCH_DTYPES)
    if not dtypes:
        raise ConfigError(f"base profile '{base.name}' has no peak for bf16, fp16 or fp32",
                          field="compute.peak_flops_per_s")
    plan = make_plan(device.type, req.quick, dtypes, req.a2a_ranks, req.budget_s)
    sections = req.sections or SECTIONS
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ConfigError(f"unknown section '{bad[0]}'; expected some of {', '.join(SECTIONS)}",
                          field="--sections")
    prov = {"command": req.command, "quick": req.quick, "torch_threads": threads,
            "base_profile": base.name}
    meas = run_suite(device, plan, base.memory.l2_bytes, sections, provenance=prov)
    skipped = meas.provenance.get("skipped_points") or []
    if not meas.records and skipped:
        raise ConfigError(f"the time budget skipped every point ({len(skipped)}; first: "
                          f"{skipped[0]['point']}: {skipped[0]['reason']}); give more seconds "
                          "(--budget-s) or fewer --sections", field="--budget-s")
    return meas


def _base_for(req: Request, facts: dict) -> str:
    return req.base or default_base(facts)


def run(req: Request) -> tuple[HardwareProfile, dict]:
    """Measure (or read), fit and write; returns the loaded profile and its YAML dict."""
    _check_out(req)
    if req.from_json:
        meas = merge([load_measurements(p) for p in req.from_json])
        base_name = _base_for(req, meas.provenance.get("device_facts") or {})
    else:
        if req.device.strip().lower() == "cpu" or req.base:
            base_name = req.base or "cpu"
        else:
            from moesim.harness.device import device_facts, parse_device

            base_name = default_base(device_facts(parse_device(req.device)))
        meas = measure(req, load_profile(base_name))
    base = load_profile(base_name)
    name = req.name or req.out.stem
    opts = Options(name=name, base_ref=base_reference(base_name, req.out),
                   memory_source=req.memory_source, domain_size=req.domain_size,
                   tile_m=req.tile_m, a2a_world=req.a2a_world, command=req.command)
    if req.raw_out:
        _write_measurements(meas, req.raw_out)
    doc = calibrate(meas, base, opts)
    if req.raw_out:
        _write_fit(doc, req.raw_out)
    date = doc["provenance"]["date"]
    header = [f"Calibrated hardware profile written by `moesim calibrate` ({date}).",
              f"Command: {req.command}",
              f"Base (datasheet peaks, inherited): {base.name}. Only measured fields are set here;",
              "provenance: says where and how; fit_quality: held-out errors of each fit."]
    return write_profile(doc, req.out, header), doc


def _write_measurements(meas: Measurements, folder: Path) -> None:
    """Raw records first, so that a failed fit does not lose a run."""
    meas.write(Path(folder) / "measurements.json")
    write_tables(meas, folder)
    print(f"[calibrate] raw measurements: {folder}", file=sys.stderr)


def _write_fit(doc: dict, folder: Path) -> None:
    summary = {"profile": doc["name"], "provenance": doc["provenance"],
               "fit_quality": doc["fit_quality"], "efficiency": doc.get("efficiency"),
               "compute": doc.get("compute"), "scale_up": doc.get("scale_up"),
               "scale_out": doc.get("scale_out"), "memory": doc.get("memory")}
    (Path(folder) / "fit.json").write_text(json.dumps(summary, indent=1) + "\n",
                                           encoding="utf-8")
