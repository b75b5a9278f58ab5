"""``run_scenario``: expand the grid, evaluate it in chunks with ``predict_many`` (progress bar),
then write the table (CSV, Parquet), the scenario, ``metadata.json`` and ``report.html``.

Every file is written atomically: an interrupted run leaves the previous files intact.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from moesim import fileio as io
from moesim.config import ConfigError
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


def _write(scenario, result: RunResult, command: str | None, start: float) -> None:
    out, table, outputs, files = result.out_dir, result.table, scenario.outputs, result.files
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
