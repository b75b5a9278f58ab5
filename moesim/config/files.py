"""Reading input files a user names: only regular files, only up to a size limit, only UTF-8.

``routing: trace:/dev/zero`` or a 4 GB file named ``model.yaml`` must be refused before a byte
is read, with a message naming the limit (see :mod:`moesim.config.limits`).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from moesim.config.errors import ConfigError
from moesim.config.limits import MAX_CONFIG_FILE_BYTES, MAX_NESTING, limit_error


def checked_size(path: str | Path, max_bytes: int, limit_name: str,
                 field: str | None = None, what: str = "file") -> int:
    """Size in bytes of ``path`` after checking it is a regular file of at most ``max_bytes``."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", file=str(path),
                          field=field) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError("not a regular file (a device, pipe or folder); expected a file",
                          file=str(path), field=field)
    if info.st_size > max_bytes:
        raise ConfigError(limit_error("file size (bytes)", info.st_size, max_bytes, limit_name),
                          file=str(path), field=field)
    return info.st_size


def read_text_file(path: str | Path, max_bytes: int = MAX_CONFIG_FILE_BYTES,
                   limit_name: str = "MAX_CONFIG_FILE_BYTES", field: str | None = None) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; anything else a ConfigError."""
    checked_size(path, max_bytes, limit_name, field)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=str(path),
                          field=field) from None
    if len(raw) > max_bytes:  # grew since the check
        raise ConfigError(limit_error("file size (bytes)", len(raw), max_bytes, limit_name),
                          file=str(path), field=field)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}; "
                          "expected a UTF-8 file", file=str(path), line=line,
                          field=field) from None


def load_json_file(path: str | Path, field: str | None = None):
    """Parsed JSON of a regular UTF-8 file within the size limit; bad JSON names its line."""
    text = read_text_file(path, field=field)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", file=str(path), line=exc.lineno,
                          field=field) from None
    except RecursionError:
        raise ConfigError(limit_error("nesting depth", "over 1000", MAX_NESTING, "MAX_NESTING"),
                          file=str(path), field=field) from None
