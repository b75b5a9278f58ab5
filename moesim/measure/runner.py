"""Measuring a table of configs, resumably, into the folder's journal (torch-free).

Each row becomes a case (``moesim.measure.cases.build_case``) keyed by a hash of everything it
depends on. Cases are grouped by ``ep``; each group runs in one worker launch
(``moesim.harness.launch.run_ranks`` of ``moesim.measure.ep_bench_worker``: torchrun with EP
ranks, ``ep == 1`` without it), whose rank 0 commits each finished case to the journal
(``moesim.measure.journal``: SQLite, one transaction per record). A rerun reads the journal
first and launches only the cases whose keys are missing, so an interrupted run loses at most
the case in flight; a second run on the same folder is refused while the first holds the lock.
A worker that commits nothing for ``timeout_s`` (per config) is stopped and named with the case
it was running. A case timed while other processes used more than ``max_foreign`` of the CPU
is launched again (up to ``attempts`` in all). With ``passes > 1`` every config is measured
that many times, in whole passes over the table minutes apart, and keeps its quietest clean
record (the lowest median layer time: other tenants of a shared host only ever slow a run, and
a burst of their load tends to hit a run of neighbouring configs, which a later pass undoes).
Identical configs (e.g. one config under two hardware profiles) are measured once.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from moesim.config import ConfigError
from moesim.harness.launch import HarnessError, run_ranks
from moesim.measure.cases import MeasureSettings, build_case, settings_dict  # noqa: F401
from moesim.measure.journal import Journal


class MeasureError(RuntimeError):
    """A worker failed (not an input error); the message carries its command and output."""


def foreign(record: dict | None) -> float:
    """The record's ``foreign_cpu_frac`` (0 when unknown; inf for no record)."""
    if record is None:
        return float("inf")
    value = record.get("foreign_cpu_frac")
    return 0.0 if value is None or math.isnan(value) else float(value)


def contaminated(record: dict | None, max_foreign: float) -> bool:
    """Other processes took more than ``max_foreign`` of the machine (and > 50 ms of CPU, the
    resolution of ``/proc/stat`` over two cores) while the config was timed."""
    return record is None or (foreign(record) > max_foreign
                              and record.get("foreign_cpu_s", 1.0) > 0.05)


def _rank(record: dict, max_foreign: float) -> tuple[bool, float]:
    """Sort key, lower is better: clean first, then the lower median (clean) or share of
    foreign CPU (contaminated)."""
    if not contaminated(record, max_foreign):
        return False, statistics.median(record.get("total_s") or [math.inf])
    return True, foreign(record)


def best_records(records: list[dict], max_foreign: float = 0.10) -> dict[str, dict]:
    """Per key, the quietest clean record (lowest median layer time among those with at most
    ``max_foreign`` of the CPU taken by others), else the least foreign."""
    done: dict[str, dict] = {}
    for record in records:
        old = done.get(record["key"])
        if old is None or _rank(record, max_foreign) < _rank(old, max_foreign):
            done[record["key"]] = record
    return done


def clean_counts(records: list[dict], max_foreign: float = 0.10) -> dict[str, int]:
    """Clean records per key (passes done)."""
    counts: dict[str, int] = {}
    for record in records:
        if not contaminated(record, max_foreign):
            counts[record["key"]] = counts.get(record["key"], 0) + 1
    return counts


#: ``launcher(cases, ep, journal_path, settings)`` runs the cases of one EP size.
Launcher = Callable[[list, int, Path, MeasureSettings], None]


def _stall_watchdog(journal_path: Path, cases: list[dict], timeout_s: float):
    """A watchdog for ``run_ranks``: the reason to stop once no record was committed for
    ``timeout_s`` (naming the case in flight), else None."""
    journal = Journal(journal_path, import_legacy=False)
    state = {"count": journal.count(), "since": time.monotonic(), "done": 0}

    def check() -> str | None:
        count = journal.count()
        if count != state["count"]:
            state.update(done=state["done"] + count - state["count"], count=count,
                         since=time.monotonic())
            return None
        if time.monotonic() - state["since"] <= timeout_s:
            return None
        case = cases[min(state["done"], len(cases) - 1)]
        return (f"config {case['key']} ({case['tokens']} tokens per rank, ep {case['ep']}) "
                f"ran past the per-config timeout of {timeout_s:.0f} s")
    return check


def subprocess_launcher(cases: list[dict], ep: int, journal_path: Path,
                        settings: MeasureSettings) -> None:
    """Run the cases in fresh worker processes (the default launcher)."""
    cases_file = journal_path.parent / f".cases-ep{ep}.json"
    cases_file.write_text(json.dumps(cases), encoding="utf-8")
    args = ["--cases", str(cases_file), "--journal", str(journal_path),
            "--device", settings.device_type, "--threads", str(settings.threads_for(ep)),
            "--timeout-s", str(settings.timeout_s)]
    args += [] if all(c.get("reuse_memory", True) for c in cases) else ["--system-malloc"]
    try:
        run_ranks(ep, "moesim.measure.ep_bench_worker", args, threads=settings.threads_for(ep),
                  watchdog=_stall_watchdog(journal_path, cases, settings.timeout_s))
    except HarnessError as exc:
        raise MeasureError(f"measurement with {ep} rank(s): {exc}") from None
    finally:
        cases_file.unlink(missing_ok=True)


def inprocess_launcher(on_record: Callable[[dict], None] | None = None) -> Launcher:
    """Run ``ep == 1`` cases in this process (tests); ``on_record`` sees each finished record
    after it is committed (a test injects an interruption there)."""

    def launch(cases, ep, journal_path, settings):
        import torch

        from moesim.measure.ep_bench_worker import run_cases

        if ep != 1:
            raise MeasureError(f"the in-process launcher runs ep 1 only, got ep {ep}")
        journal, previous = Journal(journal_path, import_legacy=False), torch.get_num_threads()
        torch.set_num_threads(settings.threads_for(ep))

        def sink(record):
            journal.add(record)
            if on_record is not None:
                on_record(record)
        try:
            run_cases(cases, sink=sink)
        finally:
            torch.set_num_threads(previous)
            journal.close()
    return launch


def build_cases(rows: list[dict], settings: MeasureSettings,
                provenance: dict | None = None) -> tuple[list[str], dict[str, dict]]:
    """(key per row, case per distinct key); a row's ConfigError names the row."""
    cases: dict[str, dict] = {}
    keys = []
    for i, row in enumerate(rows):
        try:
            case = build_case(row, settings)
        except ConfigError as exc:
            raise ConfigError(f"row {i}: {exc.message}", field=exc.field, file=exc.file) from None
        case["provenance"] = dict(provenance or {})
        keys.append(case["key"])
        cases.setdefault(case["key"], case)
    return keys, cases


def measure_rows(rows: list[dict], out_dir: str | Path, settings: MeasureSettings,
                 launcher: Launcher | None = None, progress=None,
                 provenance: dict | None = None) -> tuple[list[str], dict]:
    """Measure every row not yet in the folder's journal; returns (key per row, records by
    key). ``provenance`` (e.g. the measuring git commit) goes into every new record."""
    keys, cases = build_cases(rows, settings, provenance)
    journal = Journal.in_folder(out_dir)
    if journal.dropped and progress:
        progress(f"dropped {journal.dropped} torn line(s) of the old partial measurements file")
    with journal.locked():
        _launch_rounds(journal, cases, settings, launcher or subprocess_launcher, progress)
        done = best_records(journal.records(), settings.max_foreign)
    journal.close()
    missing = sorted({k for k in keys if k not in done})
    if missing:
        raise MeasureError(f"{len(missing)} config(s) have no measurement after the run "
                           f"(keys {missing[:3]}); see {journal.path}")
    return keys, done


def _launch_rounds(journal: Journal, cases: dict[str, dict], settings: MeasureSettings,
                   launcher: Launcher, progress) -> None:
    launches: dict[str, int] = {}
    most = settings.passes + settings.attempts - 1  # launches per config in this run
    for round_ in range(most):
        clean = clean_counts(journal.records(), settings.max_foreign)
        pending = [c for k, c in cases.items()
                   if clean.get(k, 0) < settings.passes and launches.get(k, 0) < most]
        if not pending:
            return
        if round_ and progress:
            progress(f"round {round_ + 1}: {len(pending)} config(s) short of {settings.passes} "
                     f"clean pass(es) (a run where other processes took more than "
                     f"{settings.max_foreign:.0%} of the CPU does not count)")
        for c in pending:
            launches[c["key"]] = launches.get(c["key"], 0) + 1
        for ep in sorted({c["ep"] for c in pending}):
            group = [c for c in pending if c["ep"] == ep]
            if progress:
                progress(f"measuring {len(group)} config(s) with {ep} rank(s) on "
                         f"{settings.device_type}, {settings.threads_for(ep)} thread(s) per rank")
            launcher(group, ep, journal.path, settings)
