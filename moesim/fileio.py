"""Atomic writes: a file through a temp file and ``os.replace``; a results folder as a whole.

An interrupted or failing writer leaves the previous file (or folder) untouched, and the next
run removes what a killed one left behind: a folder never mixes files of two runs.
Shared by scenarios, reports, measurement and the CLI (and ``read_table`` reads their tables).
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Permissions of written files: what ``open()`` would give (mkstemp makes them 0600).
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, then move ``tmp_path`` over ``path``; on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: dict) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | Path, table: pd.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def write_parquet(path: str | Path, table: pd.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))


def read_table(path: str | Path) -> pd.DataFrame:
    """A results table from ``.csv`` or ``.parquet``."""
    from moesim.config import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such results table", file=str(path))
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise ConfigError(f"unknown table format '{path.suffix}'; expected .csv or .parquet",
                      file=str(path))


_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: str | Path) -> None:
    """Remove what killed runs left beside ``out`` (staging folders) and inside it (temp files
    of :func:`atomic_write`); a folder moved aside by a run killed mid-swap comes back."""
    out = Path(out)
    if out.parent.is_dir():
        for entry in out.parent.iterdir():
            m = _STAGING.match(entry.name)
            if m is None or m["name"] != out.name or _alive(int(m["pid"])):
                continue
            if m["kind"] == "old" and not out.exists():
                os.rename(entry, out)
            else:
                shutil.rmtree(entry, ignore_errors=True)
    if out.is_dir():
        for entry in out.glob(".*.tmp"):
            if entry.is_file():
                entry.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                            _RENAME_EXCHANGE)
    except (AttributeError, OSError):
        return False
    return rc == 0


def _link_or_copy(src, dst) -> None:
    """A hard link (no bytes copied; the same file for a process still writing it), or a copy
    where the file system has no links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish_folder(out: str | Path, write: Callable[[Path], None], replaces: set[str]) -> Path:
    """Write a run into a staging folder beside ``out`` with ``write(stage)``, then swap it in.

    Entries of the old ``out`` not named in ``replaces`` (e.g. a measurement journal) are
    carried over by hard links; the swap is one atomic exchange of the two folders where the
    OS has it (else two renames, undone by :func:`clean_stale` if cut between them). A failing
    or killed ``write`` leaves ``out`` as it was.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        from moesim.config import ConfigError

        raise ConfigError("exists and is not a folder; expected a results folder", file=str(out))
    clean_stale(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage = out.parent / f".{out.name}.staging-{tag}"
    stage.mkdir()
    try:
        write(stage)
        if out.is_dir():
            for entry in out.iterdir():
                if entry.name in replaces or entry.name.endswith(".tmp"):
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, stage / entry.name, copy_function=_link_or_copy)
                else:
                    _link_or_copy(entry, stage / entry.name)
            if not _exchange(stage, out):
                aside = out.parent / f".{out.name}.old-{tag}"
                os.rename(out, aside)
                os.rename(stage, out)
                stage = aside
        else:
            os.rename(stage, out)
            return out
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out
