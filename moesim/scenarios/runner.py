"""``run_scenario``: expand the grid, evaluate it in chunks with ``predict_many`` (progress bar),
then write the table (CSV, Parquet), the scenario, ``metadata.json`` and ``report.html``.

The files are written into a staging folder and published as a whole (``io.publish_folder``):
an interrupted or failing run leaves the previous folder intact, never a mix of two runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from moesim import fileio as io
from moesim.config import ConfigError
from moesim.config.limits import MAX_PREDICT_CELLS
from moesim.input_checks import row_cells
from moesim.predict import SIGNATURE, predict_many
from moesim.scenarios.checks import measurement_hook
from moesim.scenarios.metadata import build_metadata
from moesim.scenarios.sweep import expand

RESULTS_DIR = Path("results")


@dataclass
class RunResult:
    out_dir: Path
    table: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def evaluate(configs: pd.DataFrame, chunk_rows: int = 25_000, progress: bool | None = None,
             file: str | None = None) -> pd.DataFrame:
    """``predict_many`` over ``configs`` in chunks; rows come back in their original order.

    Rows are sorted by the routing/placement signature first, so each chunk holds few groups.
    ``progress``: True shows a bar, False hides it, None shows it on a terminal only.
    """
    if "experts" in configs.columns and len(configs):  # keep each call within MAX_PREDICT_CELLS
        widest = float(row_cells(configs, configs["experts"]).max())
        chunk_rows = max(1, min(chunk_rows, int(MAX_PREDICT_CELLS // widest)))
    keys = [k for k in SIGNATURE if k in configs.columns]
    order = configs.sort_values(keys, kind="stable").index if keys else configs.index
    ordered = configs.loc[order]
    parts = []
    with tqdm(total=len(ordered), unit="config", desc="predict", leave=False,
              disable=None if progress is None else not progress) as bar:
        for start in range(0, len(ordered), chunk_rows):
            chunk = ordered.iloc[start:start + chunk_rows]
            try:
                parts.append(predict_many(chunk))
            except ConfigError as exc:
                raise exc.located(file=file) from None
            bar.update(len(chunk))
    out = pd.concat(parts, ignore_index=True)
    out.index = order
    return out.sort_index()


def run_scenario(scenario, out_dir: str | Path | None = None, command: str | None = None,
                 progress: bool | None = None) -> RunResult:
    """Run ``scenario`` (a validated ``Scenario``) into ``out_dir`` (default results/<name>)."""
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR / scenario.name
    timings: dict[str, float] = {}
    start = time.perf_counter()
    configs = expand(scenario)
    timings["expand"] = time.perf_counter() - start
    table = configs
    if scenario.mode in ("predict", "both"):
        table = evaluate(configs, scenario.outputs.chunk_rows, progress,
                         str(scenario.path) if scenario.path else None)
    timings["predict"] = time.perf_counter() - start - sum(timings.values())
    if scenario.mode in ("measure", "both"):
        returned = measurement_hook()(scenario, table, out)
        table = returned if isinstance(returned, pd.DataFrame) else table
        timings["measure"] = time.perf_counter() - start - sum(timings.values())
    result = RunResult(out, table, timings_s=timings)
    _write(scenario, result, command, start)
    return result


#: Files a run writes: replaced as a set. ``measurement.json`` is the measurement hook's; a
#: predict-only run drops an old one rather than leave it beside new results.
RUN_FILES = {"results.csv", "results.parquet", "scenario.yaml", "metadata.json", "report.html",
             "measurement.json"}


def _write(scenario, result: RunResult, command: str | None, start: float) -> None:
    """Write the run's files into a staging folder, then publish it over ``out`` whole."""
    replaces = RUN_FILES if scenario.mode == "predict" else RUN_FILES - {"measurement.json"}
    io.publish_folder(result.out_dir, lambda stage: _write_files(scenario, result, command,
                                                                 start, stage), replaces)
    result.files = {k: result.out_dir / p.name for k, p in result.files.items()}


def _write_files(scenario, result: RunResult, command: str | None, start: float,
                 out: Path) -> None:
    table, outputs, files = result.table, scenario.outputs, result.files
    mark = time.perf_counter()
    if outputs.csv:
        files["csv"] = io.write_csv(out / "results.csv", table)
    if outputs.parquet:
        files["parquet"] = io.write_parquet(out / "results.parquet", table)
    files["scenario"] = io.write_text(out / "scenario.yaml", scenario.text)
    result.timings_s["tables"] = time.perf_counter() - mark
    meta = build_metadata(scenario, len(table), command, time.perf_counter() - start)
    files["metadata"] = io.write_json(out / "metadata.json", meta)
    if outputs.report:
        from moesim.reports import write_report

        mark = time.perf_counter()
        files["report"] = write_report(table, out / "report.html", meta, outputs.figures,
                                       outputs.table_rows)
        result.timings_s["report"] = time.perf_counter() - mark
