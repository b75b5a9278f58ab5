"""Scenario files: the pydantic schema and ``load_scenario``, which checks everything up front.

A scenario names a model (preset, path, or inline fields with overrides), a list of hardware
profiles (each optionally with per-profile overrides), fixed run fields (top level or under
``run:``), a ``sweep`` grid with ``zip`` groups, a ``mode`` and the ``outputs`` to write.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from moesim.config.model import MoEModel
from moesim.config.run import RunConfig
from moesim.config.yamlio import LocatedYaml, load_yaml, load_yaml_text, pydantic_error

#: Figures a report can hold, in page order.
FIGURES = ("throughput", "phases", "bottleneck", "memory", "roofline", "hardware", "measured",
           "phase_error")
FigureName = Literal[FIGURES]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Outputs(_Strict):
    """What ``moesim run`` writes. ``table_rows`` caps the HTML table (the CSV has every row)."""

    csv: bool = True
    parquet: bool = True
    report: bool = True
    figures: list[FigureName] = Field(default_factory=lambda: list(FIGURES))  # or "all"
    table_rows: int = Field(200, ge=0, le=5000)
    chunk_rows: int = Field(25_000, gt=0, description="rows per predict_many call")


    @field_validator("figures", mode="before")
    @classmethod
    def _all(cls, value):
        return list(FIGURES) if value == "all" else value


class HardwareEntry(_Strict):
    """A profile with overrides that apply to its rows only (e.g. ``compute_dtype: bf16``)."""

    profile: str
    overrides: dict[str, Any] = Field(default_factory=dict)


#: Every run field, optional: the same types as ``RunConfig``; values are checked by it later.
RunFields = create_model(
    "RunFields", __config__=ConfigDict(frozen=True, extra="forbid"),
    **{name: (Optional[info.annotation], None) for name, info in RunConfig.model_fields.items()})


class ScenarioFile(RunFields):  # type: ignore[valid-type, misc]
    """The YAML document, structurally checked. Run fields may also sit at the top level."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    description: str = ""
    model: str | dict[str, Any]
    hardware: list[Any] = Field(min_length=1)
    run: RunFields | None = None  # type: ignore[valid-type]
    sweep: dict[str, Any] | None = None
    mode: Literal["predict", "measure", "both"] = "predict"
    outputs: Outputs = Field(default_factory=Outputs)


@dataclass(frozen=True)
class HardwareChoice:
    """One profile of the scenario: the name or path as given, its overrides, the profile."""

    name: str
    overrides: dict
    profile: Any
    line: int | None = None


@dataclass(frozen=True)
class Scenario:
    """A validated scenario, ready to expand into a table of configs."""

    spec: ScenarioFile
    doc: LocatedYaml
    text: str
    path: Path | None
    model_ref: str  # preset name/path for predict_many's ``model`` column, or 'custom'
    model_fields: dict  # overrides of the preset, or every field of an inline model
    model: MoEModel
    run: dict
    hardware: tuple[HardwareChoice, ...]
    axes: tuple = field(default_factory=tuple)  # tuple[sweep.Axis, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def outputs(self) -> Outputs:
        return self.spec.outputs

    @property
    def swept_fields(self) -> list[str]:
        return [f for axis in self.axes for f in axis.fields]

    def points(self) -> int:
        """Rows the scenario produces: grid points x profiles."""
        n = len(self.hardware)
        for axis in self.axes:
            n *= len(axis.values)
        return n


def load_scenario(path: str | Path) -> Scenario:
    """Read, parse (safe loader) and validate a scenario file; errors name file, line, field."""
    from moesim.scenarios.paths import rebase_scenario

    path = Path(path)
    doc = load_yaml(path)
    if isinstance(doc.data, dict):
        doc.data = rebase_scenario(doc.data, path.parent)
    return _validate(doc, doc.text, path)


def scenario_from_text(text: str, file: str = "<string>") -> Scenario:
    """Validate scenario YAML text (tests, embedded scenarios)."""
    return _validate(load_yaml_text(text, file=file), text, None)


def _validate(doc: LocatedYaml, text: str, path: Path | None) -> Scenario:
    from moesim.scenarios.checks import resolve

    if not isinstance(doc.data, dict):
        raise doc.error("expected a mapping with name, model, hardware, sweep ...")
    try:
        spec = ScenarioFile.model_validate(doc.data)
    except ValidationError as exc:
        raise pydantic_error(exc, doc, model_cls=ScenarioFile) from None
    return resolve(spec, doc, text, path)
