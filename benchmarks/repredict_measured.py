"""Refresh the prediction columns of a committed measured table after a deliberate model change.

Run: ``python benchmarks/repredict_measured.py results/validation-cpu [results/overlap-cpu ...]``.
Measures nothing: the measured columns stay as they are; every prediction column is re-predicted
with today's model and profiles, the relative errors and the predicted band are recomputed, and
``metadata.json`` gets a ``repredicted`` entry (commit, date, MAPE before and after) so a reader
sees that the predictions are newer than the measurement. Prints one line per table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from moesim.config.model import MODEL_FIELDS
from moesim.config.run import RUN_FIELDS
from moesim.measure.scenario_hook import error_band, relative_errors
from moesim.predict import predict_many
from moesim.result import OUTPUT_COLUMNS
from moesim.fileio import write_csv, write_json


def _commit() -> str:
    """HEAD, with ``+dirty`` when the working tree has changes (the model that predicted)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def repredict(folder: Path) -> tuple[float, float]:
    """(MAPE before, MAPE after) in percent; rewrites ``results.csv`` and ``metadata.json``."""
    path = folder / "results.csv"
    table = pd.read_csv(path)
    before = 100 * float(table["rel_error_time"].abs().mean())
    inputs = list(dict.fromkeys(c for c in ("model", "hardware", *MODEL_FIELDS, *RUN_FIELDS)
                                if c in table))
    fresh = predict_many(table[inputs].copy())
    for col in OUTPUT_COLUMNS:
        if col in table:
            table[col] = fresh[col].to_numpy()
    table = error_band(relative_errors(table))
    after = 100 * float(table["rel_error_time"].abs().mean())
    write_csv(path, table)
    meta_path = folder / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.setdefault("repredicted", []).append({
        "command": f"python benchmarks/repredict_measured.py {folder}",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _commit(), "note": "prediction columns only; measured columns unchanged",
        "mape_time_percent_before": round(before, 3), "mape_time_percent_after": round(after, 3)})
    write_json(meta_path, meta)
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    for folder in parser.parse_args().folders:
        before, after = repredict(folder)
        print(f"{folder}: layer-time MAPE {before:.2f} % -> {after:.2f} %")


if __name__ == "__main__":
    main()
