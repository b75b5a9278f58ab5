"""The measurement journal: finished configs in a transactional SQLite file (stdlib ``sqlite3``).

``<out>/measure.sqlite`` holds one row per finished measurement (``key``, the record as JSON,
its SHA-256 ``digest``, unique). The worker's rank 0 commits each record in its own transaction,
so a ``kill -9`` at any moment leaves every committed record whole and nothing else (SQLite's
atomic commit); a rerun reads the journal and measures only what is missing. One run at a time:
``moesim measure`` holds an exclusive ``flock`` on the journal file while it runs
(:meth:`Journal.locked`), and a second run on the same folder is refused with the first one's
process id. Older runs kept ``measure.partial.jsonl`` (one JSON line per record): it is read on
every open and its records imported (idempotently, by digest); a torn line, cut off by a kill
or with the next record appended onto it, is repaired (the whole records in it kept) or
dropped (:func:`read_jsonl`).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from moesim.config import ConfigError

JOURNAL_NAME = "measure.sqlite"
LEGACY_NAME = "measure.partial.jsonl"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owner (id INTEGER PRIMARY KEY CHECK (id = 0), pid INTEGER);
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """(records, fragments dropped) of a JSON-lines file. A line that does not parse as one
    record is searched for whole records (a record appended onto a torn line starts with
    ``{"key"``); what is left of it is dropped."""
    records, dropped = [], 0
    decoder = json.JSONDecoder()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
            continue
        except json.JSONDecodeError:
            pass
        found, at = [], line.find('{"key"', 1)
        while at >= 0:
            try:
                obj, end = decoder.raw_decode(line, at)
            except json.JSONDecodeError:
                at = line.find('{"key"', at + 1)
                continue
            if isinstance(obj, dict) and "key" in obj:
                found.append(obj)
            at = line.find('{"key"', end)
        records.extend(found)
        dropped += 1
    return [r for r in records if isinstance(r, dict) and "key" in r], dropped


class Journal:
    """The SQLite journal of one results folder (``path``: the ``.sqlite`` file)."""

    def __init__(self, path: str | Path, import_legacy: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self.db.executescript(_SCHEMA)
        self.dropped = 0
        legacy = self.path.with_name(LEGACY_NAME)
        if import_legacy and legacy.is_file():
            self.import_jsonl(legacy)

    @classmethod
    def in_folder(cls, out_dir: str | Path) -> Journal:
        return cls(Path(out_dir) / JOURNAL_NAME)

    def import_jsonl(self, path: Path) -> int:
        """Import an old ``measure.partial.jsonl`` (already imported records are skipped);
        returns how many were new."""
        records, self.dropped = read_jsonl(path)
        before = self.count()
        with self._transaction():
            for record in records:
                self._insert(record)
        return self.count() - before

    @contextmanager
    def _transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _insert(self, record: dict) -> None:
        text = json.dumps(record, sort_keys=True)
        self.db.execute("INSERT OR IGNORE INTO records (key, digest, record) VALUES (?, ?, ?)",
                        (str(record["key"]), _digest(text), text))

    def add(self, record: dict) -> None:
        """Commit one record (atomically: after a crash it is there whole or not at all)."""
        with self._transaction():
            self._insert(record)

    def records(self) -> list[dict]:
        """Every record in commit order."""
        rows = self.db.execute("SELECT record FROM records ORDER BY id").fetchall()
        return [json.loads(text) for (text,) in rows]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def clear(self) -> None:
        """Forget every record (``--fresh``); the old JSON-lines file goes too."""
        with self._transaction():
            self.db.execute("DELETE FROM records")
        self.path.with_name(LEGACY_NAME).unlink(missing_ok=True)

    @contextmanager
    def locked(self):
        """Hold the folder's measurement lock (an exclusive ``flock`` on the journal file,
        released by the kernel when this process dies); a ConfigError while another process
        holds it."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                row = self.db.execute("SELECT pid FROM owner WHERE id = 0").fetchone()
                raise ConfigError(f"another moesim measure (pid {row[0] if row else '?'}) is "
                                  f"measuring into {self.path.parent}; wait for it to finish "
                                  "or measure into another --out", file=str(self.path)) from None
            with self._transaction():
                self.db.execute("INSERT OR REPLACE INTO owner (id, pid) VALUES (0, ?)",
                                (os.getpid(),))
            yield self
        finally:
            os.close(fd)

    def close(self) -> None:
        self.db.close()
