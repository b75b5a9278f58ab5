"""Write a ``--from-aic`` profile: the fitted sections over ``base:``, provenance, fit quality."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from moesim.calibration.aic import fit
from moesim.calibration.profile_writer import base_reference, write_profile


def calibrate_from_aic(system: str, backend: str, base: str, out: Path, version=None,
                       name: str | None = None, command: str = "", root=None):
    """Fit, write ``out`` and return the loaded profile and the document written."""
    fitted, meta = fit.build_profile(system, backend, base, version, root)
    name = name or Path(out).stem
    doc = {"name": name,
           "description": f"{base} with {backend} kernels, calibrated from AIConfigurator's "
                          f"measurements of {system}",
           "kind": "calibrated", "base": base_reference(base, Path(out)), **fitted,
           "provenance": {**meta["provenance"], "command": command,
                          "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
           "fit_quality": meta["fit_quality"]}
    header = [f"Calibrated profile written by `moesim calibrate --from-aic` ({doc['provenance']['date']}).",
              f"Command: {command}",
              "Numbers measured on real GPUs by NVIDIA AIConfigurator (see provenance); the fits are",
              "moesim's. Only fitted fields are set here; the rest comes from base:."]
    return write_profile(doc, out, header), doc
