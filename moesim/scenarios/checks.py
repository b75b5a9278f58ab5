"""Semantic checks of a scenario, all before any work: names resolve, fields are known, every
swept value and combination of model fields is valid, every profile has the dtypes it needs."""
from __future__ import annotations

import importlib
import itertools
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from moesim.config import MODEL_FIELDS, ConfigError, load_model, load_profile
from moesim.config.errors import unknown
from moesim.config.model import validate_model
from moesim.config.run import RUN_FIELDS, validate_run
from moesim.config.yamlio import LocatedYaml, pydantic_error
from moesim.scenarios.schema import HardwareChoice, HardwareEntry, Scenario, ScenarioFile
from moesim.scenarios.sweep import MAX_POINTS, parse_sweep

#: Beyond this many model-field combinations, each swept value is checked on its own.
MAX_MODEL_CHECKS = 5000
HOOK = "moesim.measure.run_scenario_measurements"


def resolve(spec: ScenarioFile, doc: LocatedYaml, text: str, path: Path | None) -> Scenario:
    """The validated ``Scenario``; the first problem found is a located ConfigError."""
    run = _fixed_run(spec, doc)
    model_ref, model_fields, model = _model(spec.model, doc)
    hardware = tuple(_hardware(item, i, doc) for i, item in enumerate(spec.hardware))
    _check_duplicates(hardware, doc)
    axes = parse_sweep(spec.sweep, doc, present="sweep" in doc.data)
    scenario = Scenario(spec=spec, doc=doc, text=text, path=path, model_ref=model_ref,
                        model_fields=model_fields, model=model, run=run, hardware=hardware,
                        axes=axes)
    if scenario.points() > MAX_POINTS:
        raise doc.error(f"the sweep has {scenario.points():,} rows; the limit is {MAX_POINTS:,}",
                        ("sweep",))
    _check_conflicts(scenario)
    _check_run_values(scenario)
    _check_models(scenario)
    _check_placements(scenario)
    if spec.mode != "predict":
        measurement_hook(doc)
    return scenario


def measurement_hook(doc: LocatedYaml | None = None):
    """``moesim.measure.run_scenario_measurements``, or a ConfigError saying it is missing."""
    try:
        return importlib.import_module("moesim.measure").run_scenario_measurements
    except (ImportError, AttributeError) as exc:
        msg = (f"mode 'measure'/'both' needs {HOOK}(scenario, table, out_dir), which is not "
               f"available ({exc}); expected mode: predict on this install")
        if doc is None:
            raise ConfigError(msg, field="mode") from None
        raise doc.error(msg, ("mode",)) from None


def _fixed_run(spec: ScenarioFile, doc: LocatedYaml) -> dict:
    top = spec.model_dump(include=set(RUN_FIELDS), exclude_unset=True)
    nested = spec.run.model_dump(exclude_unset=True) if spec.run is not None else {}
    for key in nested:
        if key in top:
            raise doc.error(f"'{key}' is set both at the top level and under run:; "
                            "expected it once", ("run", key))
    run = {k: v for k, v in {**top, **nested}.items() if v is not None}
    try:
        validate_run({"tokens": 1, **run})
    except ConfigError as exc:
        where = ("run", exc.field) if exc.field in nested else (exc.field,)
        raise doc.error(exc.message, where) from None
    return run


def _model(value, doc: LocatedYaml):
    """(model column value, fields for the table, resolved base model)."""
    if isinstance(value, str):
        try:
            return value, {}, load_model(value)
        except ConfigError as exc:
            raise exc.located(file=doc.file, line=doc.line_of(("model",))) from None
    fields = dict(value)
    preset = fields.pop("preset", None)
    if preset is None:
        model = validate_model(fields, doc=doc, prefix=("model",))
        return "custom", {k: getattr(model, k) for k in MODEL_FIELDS}, model
    try:
        model = load_model(str(preset), **fields)
    except ConfigError as exc:
        path = ("model", exc.field) if exc.field in fields else ("model", "preset")
        raise doc.error(exc.message, path) from None
    return str(preset), {k: v for k, v in fields.items() if k in MODEL_FIELDS}, model


def _hardware(item, i: int, doc: LocatedYaml) -> HardwareChoice:
    where = ("hardware", i)
    if isinstance(item, str):
        item = {"profile": item}
    if not isinstance(item, dict):
        raise doc.error(f"expected a profile name or path, or {{profile, overrides}}; got {item!r}",
                        where)
    try:
        entry = HardwareEntry.model_validate(item)
    except ValidationError as exc:
        raise pydantic_error(exc, doc, prefix=where, model_cls=HardwareEntry) from None
    for key in entry.overrides:
        if key not in MODEL_FIELDS + RUN_FIELDS:
            raise doc.error(unknown("override field", key, MODEL_FIELDS + RUN_FIELDS),
                            where + ("overrides", key))
    try:
        profile = load_profile(entry.profile)
    except ConfigError as exc:
        if exc.file:  # the profile file itself is broken: its own file and line
            raise
        raise doc.error(exc.message, where) from None
    return HardwareChoice(entry.profile, dict(entry.overrides), profile, doc.line_of(where))


def _check_duplicates(hardware, doc: LocatedYaml) -> None:
    seen = set()
    for i, hw in enumerate(hardware):
        if hw.profile.name in seen:
            raise doc.error(f"profile '{hw.profile.name}' is listed twice", ("hardware", i))
        seen.add(hw.profile.name)


def _check_conflicts(sc: Scenario) -> None:
    swept = {f: axis for axis in sc.axes for f in axis.fields}
    for key in sc.run:
        if key in swept:
            raise sc.doc.error(f"'{key}' is both fixed (run) and swept; expected one of the two",
                               swept[key].path)
    for i, hw in enumerate(sc.hardware):
        for key in hw.overrides:
            if key in swept:
                raise sc.doc.error(f"'{key}' is both swept and overridden for this profile; "
                                   "expected one of the two", ("hardware", i, "overrides", key))
    if "tokens" not in sc.run and "tokens" not in swept and \
            not all("tokens" in hw.overrides for hw in sc.hardware):
        raise sc.doc.error("missing 'tokens': expected it at the top level, under run:, "
                           "or in sweep", ())


def _check_run_values(sc: Scenario) -> None:
    """Every swept run value is valid: per field, the values that stand for the others (run
    checks are per field and interval-shaped; see moesim.input_checks.representatives)."""
    from moesim.input_checks import representatives

    base = {"tokens": 1, **sc.run}
    for axis in sc.axes:
        for j, name in enumerate(axis.fields):
            if name not in RUN_FIELDS:
                continue
            column = pd.Series([v[j] for v in axis.values])
            for i in representatives(column, integral=name != "capacity_factor"):
                _run_ok({**base, name: axis.values[i][j]}, sc.doc, axis, i)
    for i, hw in enumerate(sc.hardware):
        run = {k: v for k, v in hw.overrides.items() if k in RUN_FIELDS}
        _run_ok({**base, **run}, sc.doc, None, ("hardware", i, "overrides"))
    _run_ok(base, sc.doc, None, ("run",) if sc.spec.run else ())


def _run_ok(run: dict, doc: LocatedYaml, axis, where) -> None:
    try:
        validate_run(run)
        _check_placement(run.get("placement", "contiguous"))
    except ConfigError as exc:
        if axis is None:
            raise doc.error(exc.message, where + ((exc.field,) if exc.field else ())) from None
        path = axis.path + ((where,) if len(axis.fields) == 1 else (exc.field, where))
        raise doc.error(exc.message, path) from None


def _check_placement(spec: str) -> None:
    from moesim.core.placement import PLACEMENT_KINDS

    kind = str(spec).partition(":")[0]
    if kind not in PLACEMENT_KINDS and Path(str(spec)).suffix not in (".yaml", ".yml", ".json"):
        raise ConfigError(unknown("placement", spec, PLACEMENT_KINDS)
                          + " (or 'replicated:R', or a .yaml/.json placement file)",
                          field="placement")


def _field_values(sc: Scenario, name: str, default=None) -> dict:
    """Every value ``name`` takes in the scenario -> where it is set (a YAML path)."""
    found = {}
    for axis in sc.axes:
        if name in axis.fields:
            j = axis.fields.index(name)
            found.update({v[j]: axis.path for v in axis.values})
    for i, hw in enumerate(sc.hardware):
        if name in hw.overrides:
            found.setdefault(hw.overrides[name], ("hardware", i, "overrides", name))
    if name not in sc.swept_fields:
        if name in sc.run:
            found.setdefault(sc.run[name], ("run", name) if sc.spec.run and name in
                             sc.spec.run.model_fields_set else (name,))
        elif name in MODEL_FIELDS:
            found.setdefault(getattr(sc.model, name), ("model",))
        else:
            found.setdefault(default, ())
    return found


def _check_placements(sc: Scenario) -> None:
    """Each placement builds for every experts x ep the scenario uses (divisibility etc.)."""
    from moesim.inputs import build_placement, inclusion_probs

    placements = _field_values(sc, "placement", "contiguous")
    experts = _field_values(sc, "experts")
    eps = _field_values(sc, "ep", 1)
    if len(placements) * len(experts) * len(eps) > MAX_MODEL_CHECKS:
        return
    for (spec, at_p), (e, at_e), (ep, at_ep) in itertools.product(
            placements.items(), experts.items(), eps.items()):
        try:
            build_placement(str(spec), int(e), int(ep), inclusion_probs("uniform", int(e), 1))
        except ConfigError as exc:
            by_field = {"ep": at_ep, "experts": at_e}.get(exc.field, at_p)
            swept = [w for w in (by_field, at_p, at_ep, at_e) if w[:1] == ("sweep",)]
            where = swept[0] if swept else by_field  # blame what varies
            raise sc.doc.error(f"{exc.message} (with experts={e}, ep={ep}, placement={spec})",
                               where) from None


def _model_combos(sc: Scenario) -> list[dict]:
    parts = []
    for axis in sc.axes:
        idx = [j for j, f in enumerate(axis.fields) if f in MODEL_FIELDS]
        if idx:
            uniq = dict.fromkeys(tuple(v[j] for j in idx) for v in axis.values)
            parts.append([dict(zip([axis.fields[j] for j in idx], u)) for u in uniq])
    total = 1
    for part in parts:
        total *= len(part)
    if total > MAX_MODEL_CHECKS:
        return [combo for part in parts for combo in part]
    return [dict(kv for d in prod for kv in d.items()) for prod in itertools.product(*parts)]


def _check_models(sc: Scenario) -> None:
    """Every model-field combination validates; every profile has peaks for its dtypes."""
    combos = _model_combos(sc)
    for combo in combos:
        _with(sc.model, combo, sc.doc, _axis_path(sc, combo))
    for i, hw in enumerate(sc.hardware):
        extra = {k: v for k, v in hw.overrides.items() if k in MODEL_FIELDS}
        dtypes = set()
        for combo in combos:
            model = _with(sc.model, {**extra, **combo}, sc.doc, ("hardware", i, "overrides"))
            dtypes |= {model.gemm_dtype, model.activation_dtype}
        missing = sorted(d for d in dtypes if d not in hw.profile.compute.peak_flops_per_s)
        if missing:
            have = ", ".join(sorted(hw.profile.compute.peak_flops_per_s))
            raise sc.doc.error(
                f"profile '{hw.profile.name}' has no {'/'.join(missing)} peak FLOP/s for this "
                f"model's GEMM/activation dtype; expected one of: {have}. Add per-profile "
                f"overrides, e.g. {{profile: {hw.name}, overrides: "
                f"{{compute_dtype: {_pick(have)}}}}}", ("hardware", i))


def _pick(have: str) -> str:
    return "bf16" if "bf16" in have.split(", ") else have.split(", ")[0]


def _axis_path(sc: Scenario, combo: dict) -> tuple:
    for axis in sc.axes:
        if set(axis.fields) & set(combo):
            return axis.path
    return ("model",)


def _with(model, overrides: dict, doc: LocatedYaml, where: tuple):
    try:
        return model.with_overrides(**overrides)
    except ConfigError as exc:
        desc = ", ".join(f"{k}={v}" for k, v in overrides.items())
        raise doc.error(f"{exc.message} (with {desc})", where) from None
