"""Provenance written beside every results table (``metadata.json``)."""
from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from moesim.harness.provenance import REPO_ROOT, git_commit  # noqa: F401 (re-exported)


def scenario_info(scenario) -> dict:
    """What a report needs to know about the scenario."""
    return {
        "name": scenario.name, "description": scenario.description, "mode": scenario.mode,
        "file": str(scenario.path) if scenario.path else None,
        "sha256": hashlib.sha256(scenario.text.encode()).hexdigest(),
        "model": scenario.model_ref if scenario.model_ref != "custom" else scenario.model.name,
        "swept_fields": scenario.swept_fields,
        "zip_groups": [list(a.fields) for a in scenario.axes if len(a.fields) > 1],
        "fixed": {k: v for k, v in scenario.run.items()},
        "points": scenario.points(),
    }


def profiles_info(choices) -> dict:
    """Per ``hardware`` column value: the profile's name, kind, digest and overrides."""
    return {hw.name: {"name": hw.profile.name, "kind": hw.profile.kind,
                      "digest": hw.profile.digest(), "overrides": hw.overrides}
            for hw in choices}


def build_metadata(scenario, rows: int, command: str | None, elapsed_s: float) -> dict:
    from moesim import __version__

    commit, dirty = git_commit()
    return {
        "moesim_version": __version__, "git_commit": commit, "git_dirty": dirty,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "python": platform.python_version(), "rows": rows, "elapsed_s": round(elapsed_s, 3),
        "scenario": scenario_info(scenario), "profiles": profiles_info(scenario.hardware),
    }
