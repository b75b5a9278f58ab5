"""Locate and load AIConfigurator's measured tables.

Layout (``aiconfigurator-core`` 0.12.0)::

    aiconfigurator_core/systems/data/<system>/<family>/<backend>/<version>/<table>.parquet

``system`` e.g. ``h200_sxm``; ``family`` e.g. ``gemm``, ``moe``, ``comm``; ``backend`` one of
``trtllm``, ``vllm``, ``sglang`` (and ``nccl`` for collectives); ``version`` the engine (or NCCL)
version the rows were measured with. Latencies are milliseconds unless the column says ``_us``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from moesim.config.errors import ConfigError, unknown

PACKAGE = "aiconfigurator-core"
TESTED_VERSION = "0.12.0"
INSTALL_HINT = ("the AIConfigurator data is an optional extra: pip install 'moesim[aic]' "
                f"(or pip install {PACKAGE}=={TESTED_VERSION})")

#: table -> family folder it lives in
TABLE_FAMILY = {
    "gemm_perf": "gemm", "moe_perf": "moe", "nccl_perf": "comm", "moe_a2a_perf": "comm",
    "wideep_deepep_normal_perf": "comm", "wideep_deepep_ll_perf": "comm",
    "custom_allreduce_perf": "comm",
    "context_attention_perf": "attention", "generation_attention_perf": "attention",
    "context_mla_perf": "mla", "generation_mla_perf": "mla", "mla_context_module_perf": "mla",
    "mla_generation_module_perf": "mla",
}


class AicMissing(ConfigError):
    """The optional ``aiconfigurator-core`` package is not installed."""


def data_root(root: str | Path | None = None) -> Path:
    """The ``systems/data`` folder of the installed package (or ``root`` when given)."""
    if root is not None:
        path = Path(root)
        if not path.is_dir():
            raise ConfigError(f"AIConfigurator data folder not found: {path}", field="--aic-root")
        return path
    try:
        import aiconfigurator_core
    except ImportError:
        raise AicMissing(INSTALL_HINT) from None
    path = Path(aiconfigurator_core.__file__).resolve().parent / "systems" / "data"
    if not path.is_dir():
        raise AicMissing(f"{PACKAGE} is installed but has no systems/data folder ({path})")
    return path


def package_version() -> str | None:
    try:
        from importlib.metadata import version
        return version(PACKAGE)
    except Exception:  # noqa: BLE001 - not installed, or installed without metadata
        return None


def _version_key(text: str) -> tuple:
    """Sort key for engine versions: 1.3.0rc20 > 1.3.0rc10 > 1.2.0; 0.5.14 > 0.5.6.post2."""
    parts = re.findall(r"\d+|[a-z]+", text.lower())
    return tuple((0, int(p)) if p.isdigit() else (-1, p) for p in parts)


def systems(root: str | Path | None = None) -> list[str]:
    return sorted(p.name for p in data_root(root).iterdir() if p.is_dir())


def _check(kind: str, name: str, options: list[str]) -> str:
    if name not in options:
        raise ConfigError(unknown(kind, name, options), field=kind)
    return name


def backends(system: str, table: str, root=None) -> list[str]:
    """Backends with ``table`` for ``system``."""
    base = data_root(root) / _check("system", system, systems(root)) / TABLE_FAMILY[table]
    if not base.is_dir():
        return []
    return sorted(b.name for b in base.iterdir() if any(b.glob(f"*/{table}.parquet")))


def versions(system: str, table: str, backend: str, root=None) -> list[str]:
    """Engine versions with ``table``, newest first."""
    base = data_root(root) / system / TABLE_FAMILY[table] / backend
    found = [v.name for v in base.glob("*") if (v / f"{table}.parquet").is_file()]
    return sorted(found, key=_version_key, reverse=True)


@dataclass(frozen=True)
class TableRef:
    system: str
    table: str
    backend: str
    version: str
    path: Path

    def provenance(self, rows: int) -> dict:
        return {"system": self.system, "backend": self.backend, "engine_version": self.version,
                "table": self.table, "file": "/".join(self.path.parts[-5:]), "rows": int(rows)}


def locate(system: str, table: str, backend: str, version: str | None = None,
           root=None) -> TableRef:
    """The file of ``table`` for ``system``/``backend`` at ``version``.

    Default: the version with the most data (largest file; ties go to the newest), because
    some newer folders hold a few re-measured kernels only (e.g. h200 trtllm 1.3.0rc23 moe_perf
    has 10 k non-gated rows, 1.3.0rc20 has 127 k)."""
    if table not in TABLE_FAMILY:
        raise ConfigError(unknown("table", table, TABLE_FAMILY), field="table")
    _check("system", system, systems(root))
    _check("backend", backend, backends(system, table, root) or ["(none for this table)"])
    found = versions(system, table, backend, root)
    base = data_root(root) / system / TABLE_FAMILY[table] / backend
    if version is None:
        version = max(found, key=lambda v: ((base / v / f"{table}.parquet").stat().st_size,
                                            _version_key(v)))
    _check("version", version, found)
    path = data_root(root) / system / TABLE_FAMILY[table] / backend / version / f"{table}.parquet"
    return TableRef(system, table, backend, version, path)


def load(ref: TableRef, columns: list[str] | None = None):
    """The table as a pandas DataFrame (pyarrow reads the parquet file)."""
    import pandas as pd

    try:
        return pd.read_parquet(ref.path, columns=columns)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {ref.path}: {exc}", field=ref.table) from None
