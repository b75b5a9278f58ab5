"""Benchmark records and their JSON files (no torch: calibration reads them anywhere).

A record is one measured case: ``kind``, ``params`` (shape, dtype, bytes ...) and ``stats``
(seconds). Two file formats hold records:

- the suite's own JSON: ``{"format": "moesim-microbench/1", "provenance": {...},
  "records": [...]}`` (``moesim calibrate`` writes it, ``--from-json`` reads it);
- pytest-benchmark's ``--benchmark-json`` output of ``benchmarks/test_microbench.py``: each
  benchmark carries its records in ``extra_info["moesim_records"]`` and the device facts sit in
  ``machine_info["moesim_provenance"]``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from moesim.config.errors import ConfigError, unknown
from moesim.harness.stats import Stats

FORMAT = "moesim-microbench/1"

_NUM, _INT, _STR, _LIST = "number > 0", "integer >= 1", "string", "list of byte counts"
_COUNTS = "list of token counts"
#: Required params per record kind, with what each must be.
KINDS: dict[str, dict[str, str]] = {
    "gemm": {"dtype": _STR, "m": _INT, "k": _INT, "n": _INT},
    "grouped_gemm": {"dtype": _STR, "impl": _STR, "experts": _INT, "m": _INT, "k": _INT, "n": _INT},
    "copy": {"dtype": _STR, "bytes": _NUM},
    "op_overhead": {"op": _STR, "ops_per_sample": _INT},
    "router": {"dtype": _STR, "tokens": _INT, "hidden": _INT, "experts": _INT, "top_k": _INT},
    "permute": {"dtype": _STR, "tokens": _INT, "hidden": _INT, "experts": _INT, "top_k": _INT},
    "unpermute": {"dtype": _STR, "tokens": _INT, "hidden": _INT, "experts": _INT, "top_k": _INT},
    "activation": {"dtype": _STR, "tokens": _INT, "ffn": _INT},
    # phases of the reference MoE layer (moesim.measure.MoELayer), timed in place
    **{f"layer_{p}": {"dtype": _STR, "tokens": _INT, "hidden": _INT, "experts": _INT,
                      "top_k": _INT, "bytes": _NUM} for p in ("router", "permute", "unpermute")},
    # the reference layer's expert FFNs in place: ``counts`` rows per expert (one entry per
    # routed expert; the shared FFN is one "expert" holding every token)
    **{f"layer_{p}": {"dtype": _STR, "hidden": _INT, "ffn": _INT, "matrices": _INT,
                      "counts": _COUNTS} for p in ("experts", "shared_experts")},
    "alltoall": {"pattern": _STR, "world_size": _INT, "nodes": _INT, "send_intra": _LIST,
                 "recv_intra": _LIST, "send_inter": _LIST, "recv_inter": _LIST},
}


@dataclass(frozen=True)
class Record:
    kind: str
    params: dict
    stats: Stats

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": self.params, "stats": self.stats.to_dict()}


@dataclass
class Measurements:
    """Records plus the provenance of the run that produced them."""

    records: list[Record]
    provenance: dict = field(default_factory=dict)
    source: str | None = None

    def of(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "provenance": self.provenance,
                "records": [r.to_dict() for r in self.records]}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path


def _check_param(value, need: str) -> bool:
    if need == _STR:
        return isinstance(value, str) and bool(value)
    if need in (_LIST, _COUNTS):
        return isinstance(value, list) and bool(value) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= 1 and float(value).is_integer() if need == _INT else value > 0


def record_from_dict(data, where: str, file: str | None = None) -> Record:
    """A validated record; anything malformed is a ConfigError naming file and field."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping with kind, params, stats, got {type(data).__name__}",
                          file=file, field=where)
    kind = data.get("kind")
    if kind not in KINDS:
        raise ConfigError(unknown("record kind", str(kind), KINDS), file=file,
                          field=f"{where}.kind")
    params = data.get("params")
    if not isinstance(params, dict):
        raise ConfigError("expected a mapping of case parameters", file=file,
                          field=f"{where}.params")
    for name, need in KINDS[kind].items():
        if not _check_param(params.get(name), need):
            raise ConfigError(f"expected a {need} for a '{kind}' record, got "
                              f"{params.get(name)!r}", file=file, field=f"{where}.params.{name}")
    return Record(kind, params, Stats.from_dict(data.get("stats"), f"{where}.stats", file))


def _records(items, where: str, file: str) -> list[Record]:
    if not isinstance(items, list):
        raise ConfigError("expected a list of records", file=file, field=where)
    return [record_from_dict(item, f"{where}[{i}]", file) for i, item in enumerate(items)]


def _from_pytest_benchmark(doc: dict, file: str) -> Measurements:
    records: list[Record] = []
    benches = doc.get("benchmarks")
    if not isinstance(benches, list):
        raise ConfigError("expected a list", file=file, field="benchmarks")
    for i, bench in enumerate(benches):
        extra = bench.get("extra_info", {}) if isinstance(bench, dict) else None
        if not isinstance(extra, dict) or "moesim_records" not in extra:
            raise ConfigError("expected extra_info.moesim_records (written by "
                              "benchmarks/test_microbench.py)", file=file,
                              field=f"benchmarks[{i}].extra_info.moesim_records")
        records += _records(extra["moesim_records"], f"benchmarks[{i}].extra_info.moesim_records",
                            file)
    machine = doc.get("machine_info") or {}
    provenance = dict(machine.get("moesim_provenance") or {})
    provenance.setdefault("pytest_benchmark", {"datetime": doc.get("datetime"),
                                               "version": doc.get("version"),
                                               "commit_info": doc.get("commit_info")})
    return Measurements(records, provenance, file)


def load_measurements(path: str | Path) -> Measurements:
    """Read the suite's JSON or pytest-benchmark's JSON; errors name the file and field."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read benchmark JSON: {exc.strerror}", file=file) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno) from None
    if not isinstance(doc, dict):
        raise ConfigError("expected a JSON object (moesim-microbench or pytest-benchmark "
                          "output)", file=file)
    if doc.get("format") == FORMAT:
        prov = doc.get("provenance", {})
        if not isinstance(prov, dict):
            raise ConfigError("expected a mapping", file=file, field="provenance")
        return Measurements(_records(doc.get("records"), "records", file), prov, file)
    if "benchmarks" in doc:
        return _from_pytest_benchmark(doc, file)
    raise ConfigError(f"expected \"format\": \"{FORMAT}\" or a pytest-benchmark file with "
                      "\"benchmarks\"", file=file, field="format")


def merge(parts: list[Measurements]) -> Measurements:
    """Records of several files together; the first file's provenance leads, the others' are
    kept under ``merged_from``."""
    if not parts:
        raise ValueError("nothing to merge")
    if len(parts) == 1:
        return parts[0]
    prov = dict(parts[0].provenance)
    for extra in parts[1:]:
        for key, value in extra.provenance.items():
            prov.setdefault(key, value)
    prov["merged_from"] = [p.source for p in parts]
    return Measurements([r for p in parts for r in p.records], prov,
                        " + ".join(str(p.source) for p in parts))


def write_tables(meas: Measurements, folder: str | Path) -> list[Path]:
    """One CSV per record kind (params flattened, list params dropped, stats in seconds)."""
    import csv

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        recs = meas.of(kind)
        if not recs:
            continue
        rows = [{**{k: v for k, v in r.params.items() if not isinstance(v, (list, dict))},
                 **r.stats.to_dict()} for r in recs]
        cols = list(dict.fromkeys(k for row in rows for k in row))
        path = folder / f"{kind}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=cols)
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
    return written
