"""Whole-model scenarios (``scope: model``): sweep deployments of a model, predict TTFT/TPOT,
tokens/s and memory for every point, write ``results.csv``, ``metadata.json``, ``report.html``.

    name: deepseek-v3-serving
    scope: model
    model: deepseek-v3                 # preset, model YAML or config.json
    hardware: [h100-sxm, h200-sxm]     # names/paths, or {profile: NAME, overrides: {...}}
    run: {phase: decode, context: 4096}          # wholemodel.ModelRun + MoE run fields
    sweep: {dp_attn: [8, 16], batch: [64, 256]}  # product of the lists, per profile

Everything is validated before any work (unknown fields get a suggestion and a line number).
"""
from __future__ import annotations

import html
import itertools
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moesim.config import MODEL_FIELDS, ConfigError, load_model, load_profile
from moesim.config.errors import unknown
from moesim.config.yamlio import load_yaml, pydantic_error
from moesim.wholemodel import MODEL_RUN_FIELDS, MOE_RUN_FIELDS, predict_model_many, \
    validate_model_run

FIELDS = MODEL_RUN_FIELDS + MOE_RUN_FIELDS + MODEL_FIELDS
MAX_POINTS = 1_000_000


class ModelScenario(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    description: str = ""
    scope: Literal["model"]
    model: str
    hardware: list[str | dict[str, Any]] = Field(min_length=1)
    run: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list] = Field(default_factory=dict)
    report: bool = True


def is_model_scenario(path: str | Path) -> bool:
    doc = load_yaml(path)
    return isinstance(doc.data, dict) and doc.data.get("scope") == "model"


def load(path: str | Path) -> tuple[ModelScenario, pd.DataFrame, str]:
    """(scenario, the configs table, the YAML text); every problem is a located ConfigError."""
    doc = load_yaml(path)
    try:
        sc = ModelScenario.model_validate(doc.data)
    except ValidationError as exc:
        raise pydantic_error(exc, doc, file=str(path), model_cls=ModelScenario) from None
    for section, values in (("run", sc.run), ("sweep", sc.sweep)):
        for key in values:
            if key not in FIELDS:
                raise doc.error(unknown(f"{section} field", key, FIELDS), (section, key))
    for key, values in sc.sweep.items():
        if not values:
            raise doc.error("empty list; expected at least one value", ("sweep", key))
    try:
        load_model(sc.model)
    except ConfigError as exc:
        raise exc.located(file=str(path), line=doc.line_of(("model",))) from None
    rows = []
    for i, hw in enumerate(sc.hardware):
        name, over = (hw, {}) if isinstance(hw, str) else (hw.get("profile"), hw.get("overrides", {}))
        try:
            load_profile(str(name))
        except ConfigError as exc:
            raise doc.error(exc.message, ("hardware", i)) from None
        for combo in itertools.product(*sc.sweep.values()):
            rows.append({"scope": "model", "model": sc.model, "hardware": str(name), **sc.run,
                         **over, **dict(zip(sc.sweep, combo))})
    if len(rows) > MAX_POINTS:
        raise doc.error(f"the sweep has {len(rows):,} rows; the limit is {MAX_POINTS:,}",
                        ("sweep",))
    table = pd.DataFrame(rows)
    for key in set(MODEL_RUN_FIELDS) & set(table.columns):  # each swept value, checked alone
        for value in pd.unique(table[key]):
            try:
                validate_model_run({key: value})
            except ConfigError as exc:
                where = ("sweep", key) if key in sc.sweep else ("run", key)
                raise doc.error(exc.message, where) from None
    return sc, table, Path(path).read_text(encoding="utf-8")


def run(path: str | Path, out_dir: str | Path | None = None, command: str = "") -> Path:
    """Predict every config of the scenario and write the results folder; returns it."""
    from moesim import fileio as io
    from moesim.scenarios.metadata import git_commit

    start = time.perf_counter()
    sc, configs, text = load(path)
    table = predict_model_many(configs)
    out = Path(out_dir) if out_dir else Path("results") / sc.name
    commit, dirty = git_commit()
    meta = {"scenario": sc.name, "rows": len(table), "command": command, "git_commit": commit,
            "git_dirty": dirty, "elapsed_s": round(time.perf_counter() - start, 3),
            "profiles": {h: load_profile(h).digest() for h in pd.unique(table["hardware"])}}

    def write(stage: Path) -> None:
        io.write_csv(stage / "results.csv", table)
        io.write_text(stage / "scenario.yaml", text)
        io.write_json(stage / "metadata.json", meta)
        if sc.report:
            io.write_text(stage / "report.html", render(sc, table, meta))

    # staged and swapped in whole, as for per-layer scenarios (fileio.publish_folder)
    io.publish_folder(out, write, {"results.csv", "scenario.yaml", "metadata.json",
                                   "report.html"})
    return out


def render(sc: ModelScenario, table: pd.DataFrame, meta: dict) -> str:
    """A self-contained page: the whole-model figures; every user string escaped."""
    import plotly.io as pio

    from moesim.reports.model_figures import FIGURES

    blocks, first = [], True
    for name, (title, build) in FIGURES.items():
        fig = build(table)
        if fig is None:
            continue
        body = pio.to_html(fig, full_html=False, include_plotlyjs="inline" if first else False,
                           config={"displaylogo": False, "responsive": True})
        first = False
        blocks.append(f"<h2>{html.escape(title)}</h2>\n{body}")
    head = (f"<h1>{html.escape(sc.name)}</h1><p>{html.escape(sc.description)}</p>"
            f"<p>{len(table):,} configs; model {html.escape(sc.model)}; commit "
            f"{html.escape(str(meta['git_commit']))}</p>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(sc.name)}</title></head><body style='font-family:sans-serif;"
            f"max-width:1320px;margin:auto'>{head}{''.join(blocks)}</body></html>\n")
