"""Measuring a table of configs, resumably: one JSON line per finished config (torch-free).

Each row becomes a *case* (:func:`build_case`): the resolved model, tokens per rank, the cost
model's routing ``q`` and placement, and the measurement settings; its key is a hash of all of
that (:func:`config_key`). Cases are grouped by ``ep``; each group runs in one worker launch
(``python -m torch.distributed.run --standalone --nproc_per_node=EP -m
moesim.measure.ep_bench_worker``; ``ep == 1`` without torchrun), whose rank 0 appends each
finished case to ``<out_dir>/measure.partial.jsonl``. A rerun reads that file first and launches
only the cases whose keys are missing, so an interrupted run loses at most the case in flight.
A case timed while other processes used more than ``max_foreign`` of the CPU is launched again
(up to ``attempts`` in all). With ``passes > 1`` every config is measured that many times, in
whole passes over the table minutes apart, and keeps its quietest clean record (the lowest
median layer time: other tenants of a shared host only ever slow a run, and a burst of their
load tends to hit a run of neighbouring configs, which a later pass undoes; the calibration keeps
its quietest GEMM pass by the same rule). Identical configs (e.g. one config under two hardware
profiles) are measured once.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from moesim.config import MODEL_FIELDS, ConfigError, MoEModel, load_model
from moesim.config.model import validate_model
from moesim.config.run import RUN_FIELDS, validate_run

PARTIAL_NAME = "measure.partial.jsonl"
#: Overlap modes the measured layers run (``moesim.measure.ep.OVERLAPS`` and the two-batch
#: stack, ``moesim.measure.ep.two_batch_stack``; torch-free).
MEASURED_OVERLAPS = ("none", "shared", "two-batch")
#: Dtypes the torch layers compute in (fp8/fp4 weights have no plain torch path on CPU).
TORCH_DTYPES = ("fp32", "bf16", "fp16")


class MeasureError(RuntimeError):
    """A worker failed (not an input error); the message carries its command and output."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class MeasureSettings:
    """How each config is timed. ``threads``: torch threads per rank (None: the usable cores
    divided among the ranks, at least 1); ``cache_bytes``: the weights each forward must find
    outside the cache, split over the ranks (each rank rotates through copies of its layer; the
    default 64 MiB is 2x this machine's 32 MiB L3). A config during which other processes took
    more than ``max_foreign`` of the machine's CPU (``foreign_cpu_frac``) is measured again,
    up to ``attempts`` times in all. ``passes``: clean measurements per config, in separate
    passes over the table; the quietest is kept (see the module doc). ``reuse_memory``: freed
    memory is reused (no fresh, page-faulted buffers per forward; see
    ``ep_bench_worker.reuse_freed_memory``)."""

    repeats: int = 20
    warmup: int = 3
    threads: int | None = 1
    cache_bytes: int = 64 << 20
    timeout_s: float = 1800.0
    max_foreign: float = 0.10
    attempts: int = 3
    reuse_memory: bool = True
    passes: int = 1

    def __post_init__(self):
        if self.passes < 1:
            raise ConfigError(f"expected passes >= 1, got {self.passes}", field="--passes")
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigError(f"need repeats >= 1 and warmup >= 0, got {self.repeats}, "
                              f"{self.warmup}", field="--repeats")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"expected threads >= 1, got {self.threads}", field="--threads")

    def threads_for(self, ep: int) -> int:
        return self.threads or max(1, usable_cores() // ep)

    def key_fields(self, ep: int) -> dict:
        return {"repeats": self.repeats, "warmup": self.warmup, "threads": self.threads_for(ep),
                "cache_bytes": self.cache_bytes, "reuse_memory": self.reuse_memory}


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def row_model(row: dict) -> MoEModel:
    """The row's model: its own model-field columns over its preset (``model`` column)."""
    fields = {k: _plain(row[k]) for k in MODEL_FIELDS if k in row and _plain(row[k]) is not None}
    name = row.get("model", "custom")
    if name in (None, "custom") or all(k in fields for k in MODEL_FIELDS if k != "compute_dtype"):
        return validate_model(fields)
    return load_model(name, **fields)


def row_run(row: dict):
    return validate_run({k: _plain(row[k]) for k in RUN_FIELDS
                         if k in row and _plain(row[k]) is not None})


def check_measurable(model: MoEModel, run) -> str:
    """The torch dtype name the layer runs in; a ConfigError for what the layers cannot run."""
    if run.overlap not in MEASURED_OVERLAPS:
        raise ConfigError(f"overlap '{run.overlap}' is not implemented by the measured layers; "
                          f"expected one of {', '.join(MEASURED_OVERLAPS)}", field="overlap")
    if run.a2a_kernel not in ("all-to-all-v", "per-expert"):
        raise ConfigError(f"a2a_kernel '{run.a2a_kernel}' is not implemented by the measured "
                          "layers (EPMoELayer sends one row per (token, expert) with "
                          "all_to_all_single and uneven splits); expected all-to-all-v "
                          "(per-expert predicts the same bytes without the count exchange)",
                          field="a2a_kernel")
    dtypes = {model.gemm_dtype, model.activation_dtype, model.dispatch_dtype, model.combine_dtype}
    if len(dtypes) != 1 or model.gemm_dtype not in TORCH_DTYPES:
        raise ConfigError(f"the measured layers run in one dtype; expected weight/compute, "
                          f"activation, dispatch and combine dtypes all equal to one of "
                          f"{', '.join(TORCH_DTYPES)}, got {sorted(d for d in dtypes if d)}",
                          field="weight_dtype")
    return model.gemm_dtype


def config_key(model: MoEModel, run, settings: MeasureSettings) -> str:
    """16 hex digits of SHA-256 over the model fields, run fields and timing settings."""
    payload = {"model": {k: getattr(model, k) for k in MODEL_FIELDS},
               "run": run.model_dump(), "settings": settings.key_fields(run.ep)}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_case(row: dict, settings: MeasureSettings) -> dict:
    """The worker's case for one row: model, tokens per rank, the cost model's ``q`` and
    placement, seeds and timing settings."""
    from moesim.inputs import build_placement, inclusion_probs

    model, run = row_model(row), row_run(row)
    dtype = check_measurable(model, run)
    q = inclusion_probs(run.routing, model.experts, model.top_k, run.seed)
    placement = build_placement(run.placement, model.experts, run.ep, q)
    return {"key": config_key(model, run, settings), "ep": run.ep, "tokens": run.tokens,
            "model": {k: getattr(model, k) for k in MODEL_FIELDS}, "dtype": dtype,
            "q": q.tolist(), "placement": placement.as_lists(), "seed": run.seed,
            "overlap": run.overlap,
            "warmup": settings.warmup, "repeats": settings.repeats,
            "reuse_memory": settings.reuse_memory,
            "cache_bytes": settings.cache_bytes // run.ep}


def foreign(record: dict | None) -> float:
    """The record's ``foreign_cpu_frac`` (0 when unknown; inf for no record)."""
    if record is None:
        return float("inf")
    value = record.get("foreign_cpu_frac")
    return 0.0 if value is None or math.isnan(value) else float(value)


def contaminated(record: dict | None, settings: MeasureSettings) -> bool:
    """Other processes took more than ``max_foreign`` of the machine (and > 50 ms of CPU, the
    resolution of ``/proc/stat`` over two cores) while the config was timed."""
    return record is None or (foreign(record) > settings.max_foreign
                              and record.get("foreign_cpu_s", 1.0) > 0.05)


class PartialStore:
    """The append-only JSON-lines file of finished cases, keyed by ``key``; where a key was
    measured more than once, the quietest clean record wins (lowest median layer time among
    those with at most ``max_foreign`` of the CPU taken by others), else the least foreign."""

    def __init__(self, path: str | Path, max_foreign: float = 0.10):
        self.path = Path(path)
        self.settings = MeasureSettings(max_foreign=max_foreign)

    def _clean(self, record: dict) -> bool:
        return not contaminated(record, self.settings)

    def _rank(self, record: dict) -> tuple[bool, float]:
        """Sort key, lower is better: clean first, then the lower median (clean) or share of
        foreign CPU (contaminated)."""
        if self._clean(record):
            return False, statistics.median(record.get("total_s") or [math.inf])
        return True, foreign(record)

    def load(self) -> dict[str, dict]:
        """Finished records by key; a torn last line (killed mid-write) is ignored."""
        done: dict[str, dict] = {}
        for record in self.records():
            old = done.get(record["key"])
            if old is None or self._rank(record) < self._rank(old):
                done[record["key"]] = record
        return done

    def clean_counts(self) -> dict[str, int]:
        """Clean records per key (passes done)."""
        counts: dict[str, int] = {}
        for record in self.records():
            if self._clean(record):
                counts[record["key"]] = counts.get(record["key"], 0) + 1
        return counts

    def records(self) -> list[dict]:
        """Every record in file order; a torn last line (killed mid-write) is ignored."""
        if not self.path.is_file():
            return []
        out: list[dict] = []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    continue
                raise ConfigError("corrupt line in the partial measurements file; delete it or "
                                  "the line to re-measure", file=str(self.path), line=i + 1)
            out.append(record)
        return out

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


#: ``launcher(cases, ep, partial_path, threads, timeout_s)`` runs the cases of one EP size.
Launcher = Callable[[list, int, Path, int, float], None]


def run_worker(ep: int, worker_args: list[str], threads: int, timeout_s: float) -> None:
    """``moesim.measure.ep_bench_worker`` with ``ep`` ranks (torchrun + gloo for ep > 1)."""
    launch = [] if ep == 1 else ["-m", "torch.distributed.run", "--standalone",
                                 f"--nproc_per_node={ep}"]
    cmd = [sys.executable] + launch + ["-m", "moesim.measure.ep_bench_worker",
                                       "--threads", str(threads), "--timeout-s", str(timeout_s)]
    cmd += worker_args
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        raise MeasureError(f"measurement with {ep} rank(s) exceeded {timeout_s:.0f} s: "
                           f"{' '.join(cmd)}") from None
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise MeasureError(f"measurement with {ep} rank(s) failed (exit {proc.returncode}): "
                           f"{' '.join(cmd)}\n{tail}")


def subprocess_launcher(cases: list[dict], ep: int, partial: Path, threads: int,
                        timeout_s: float) -> None:
    """Run the cases in fresh worker processes (the default launcher)."""
    cases_file = partial.parent / f".cases-ep{ep}.json"
    cases_file.write_text(json.dumps(cases), encoding="utf-8")
    extra = [] if all(c.get("reuse_memory", True) for c in cases) else ["--system-malloc"]
    try:
        run_worker(ep, ["--cases", str(cases_file), "--out", str(partial)] + extra, threads,
                   timeout_s)
    finally:
        cases_file.unlink(missing_ok=True)


def inprocess_launcher(on_record: Callable[[dict], None] | None = None) -> Launcher:
    """Run ``ep == 1`` cases in this process (tests); ``on_record`` sees each finished record
    after it is on disk (a test injects an interruption there)."""

    def launch(cases, ep, partial, threads, timeout_s):
        import torch

        from moesim.measure.ep_bench_worker import run_cases

        if ep != 1:
            raise MeasureError(f"the in-process launcher runs ep 1 only, got ep {ep}")
        store, previous = PartialStore(partial), torch.get_num_threads()
        torch.set_num_threads(threads)

        def sink(record):
            store.append(record)
            if on_record is not None:
                on_record(record)
        try:
            run_cases(cases, sink=sink)
        finally:
            torch.set_num_threads(previous)
    return launch


def measure_rows(rows: list[dict], out_dir: str | Path, settings: MeasureSettings,
                 launcher: Launcher | None = None, progress=None) -> tuple[list[str], dict]:
    """Measure every row not yet in the partial file; returns (key per row, records by key)."""
    store = PartialStore(Path(out_dir) / PARTIAL_NAME, settings.max_foreign)
    cases: dict[str, dict] = {}
    keys = []
    for i, row in enumerate(rows):
        try:
            case = build_case(row, settings)
        except ConfigError as exc:
            raise ConfigError(f"row {i}: {exc.message}", field=exc.field, file=exc.file) from None
        keys.append(case["key"])
        cases.setdefault(case["key"], case)
    launcher = launcher or subprocess_launcher
    launches: dict[str, int] = {}
    most = settings.passes + settings.attempts - 1  # launches per config in this run
    for round_ in range(most):
        clean = store.clean_counts()
        pending = [c for k, c in cases.items()
                   if clean.get(k, 0) < settings.passes and launches.get(k, 0) < most]
        if not pending:
            break
        if round_ and progress:
            progress(f"round {round_ + 1}: {len(pending)} config(s) short of {settings.passes} "
                     f"clean pass(es) (a run where other processes took more than "
                     f"{settings.max_foreign:.0%} of the CPU does not count)")
        for c in pending:
            launches[c["key"]] = launches.get(c["key"], 0) + 1
        for ep in sorted({c["ep"] for c in pending}):
            group = [c for c in pending if c["ep"] == ep]
            if progress:
                progress(f"measuring {len(group)} config(s) with {ep} rank(s), "
                         f"{settings.threads_for(ep)} thread(s) per rank")
            launcher(group, ep, store.path, settings.threads_for(ep), settings.timeout_s)
    done = store.load()
    missing = sorted({k for k in keys if k not in done})
    if missing:
        raise MeasureError(f"{len(missing)} config(s) have no measurement after the run "
                           f"(keys {missing[:3]}); see {store.path}")
    return keys, done


def settings_dict(settings: MeasureSettings) -> dict:
    return {**asdict(settings), "usable_cores": usable_cores()}


# --- ranks sharing the machine: measured shares and the derived per-rank profile ----------

def measure_share(ranks: tuple[int, ...], out_dir: str | Path, duration_s: float = 0.5,
                  threads: int = 1, rounds: int = 3, max_foreign: float = 0.10,
                  timeout_s: float = 600) -> dict[int, list]:
    """Per rank count R, one record per clean round: each rank's GEMM FLOP/s, copy bytes/s and
    ops/s while all R ranks run the same loop (``ep_bench_worker --share-s``). A round runs
    R = 1 (one rank alone) and then every R, so a ratio compares neighbours in time; a round
    during which other processes took more than ``max_foreign`` of the machine is dropped and
    run again (at most ``4 * rounds`` rounds)."""
    path = Path(out_dir) / "share.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    counts = sorted(set(ranks) | {1})
    clean: dict[int, list] = {r: [] for r in counts}
    for _ in range(4 * rounds):
        for r in counts:
            run_worker(r, ["--share-s", str(duration_s), "--out", str(path)], threads, timeout_s)
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        round_ = lines[-len(counts):]
        if max(max(rec["foreign_cpu_frac"].values()) for rec in round_) <= max_foreign:
            for rec in round_:
                clean[rec["ranks"]].append(rec)
        if len(clean[1]) >= rounds:
            return clean
    raise MeasureError(f"only {len(clean[1])} of {rounds} share rounds ran without other "
                       f"processes taking > {max_foreign:.0%} of the CPU; see {path}")


def share_factors(share: dict[int, list], ranks: int) -> dict[str, float]:
    """Per-rank rate with ``ranks`` ranks over the rate of one rank alone (median over ranks,
    then over rounds), capped at 1: a rank never gets more than the machine gives one rank."""
    import numpy as np

    out = {}
    for key in share[1][0]["rates"]:
        ratios = [np.median(shared["rates"][key]) / alone["rates"][key][0]
                  for alone, shared in zip(share[1], share[ranks])]
        out[key] = min(1.0, float(np.median(ratios)))
    return out


def _eff(rate: float, peak: float) -> tuple[float, float]:
    """(efficiency, peak): a measured rate above the base peak raises the peak (calibrate's rule)."""
    return (1.0, rate) if rate > peak else (round(rate / peak, 4), peak)


def shared_profile_doc(base, base_ref: str, name: str, share: dict[int, list],
                       ranks: int) -> dict:
    """The profile of one rank when ``ranks`` ranks (1 thread each) share this machine.

    From ``base`` (a calibrated profile of one rank alone, same threads): peak FLOP/s times the
    measured GEMM share, memory bandwidth times the copy share, launch overhead divided by the
    op-rate share; the all-to-all alpha/beta from ``base.fit_quality.scale_up.per_world_size``
    (the calibration's own all-to-all runs with this many ranks).
    """
    f = share_factors(share, ranks)
    speedup, speedup_note = idle_peer_speedup(share, ranks, usable_cores(), f)
    launch = base.compute.launch_overhead_s / f["ops_per_s"]
    fq = base.fit_quality or {}
    link = ((fq.get("scale_up") or {}).get("per_world_size") or {}).get(str(ranks))
    if link is None:
        raise ConfigError(f"profile '{base.name}' has no all-to-all fit for {ranks} ranks "
                          "(fit_quality.scale_up.per_world_size); calibrate with "
                          f"--a2a-ranks including {ranks}", field="base")
    eff, peak = _eff(float(link["bytes_per_s"]), base.scale_up.bandwidth_bytes_per_s)
    sync = sync_latency(share[ranks], float(link["bytes_per_s"]))
    hide = overlap_fraction(share[ranks])
    alpha = sync["latency_s"] if sync else float(link["alpha_s"])
    lat = max(alpha - launch, 0.0)
    shares = ", ".join(f"{k} {v:.3f}" for k, v in f.items())
    note = (f"{link['bytes_per_s'] / 1e9:.3g} GB/s per rank (the calibration's all-to-all fit for "
            f"{ranks} ranks x 1 thread on this host)")
    return {
        "name": name, "kind": "calibrated", "base": base_ref,
        "description": f"{base.name} per rank when {ranks} ranks x "
                       f"{share[ranks][0]['threads_per_rank']} torch thread(s) share this machine "
                       f"({usable_cores()} cores); measured shares: {shares}",
        "compute": {"peak_flops_per_s": {d: _sig(p * f["gemm_flops_per_s"]) for d, p in
                                         base.compute.peak_flops_per_s.items()},
                    "launch_overhead_s": _sig(launch),
                    **({"idle_peer_speedup": _sig(speedup)} if speedup > 1 else {})},
        "memory": {"bandwidth_bytes_per_s": _sig(base.memory.bandwidth_bytes_per_s
                                                 * f["copy_bytes_per_s"])},
        "scale_up": {"latency_s": _sig(lat), "bandwidth_bytes_per_s": _sig(peak)},
        "scale_out": {"latency_s": _sig(lat), "bandwidth_bytes_per_s": _sig(peak)},
        "efficiency": {k: {"basis": "measured", "value": eff, "note": note}
                       for k in ("scale_up_bandwidth", "scale_out_bandwidth")},
        "sources": {**_share_sources(share, ranks, f, sync, float(link["alpha_s"])),
                    **({"compute.idle_peer_speedup": speedup_note} if speedup > 1 else {})},
        "provenance": {"share_measurement": {str(r): share[r] for r in (1, ranks)},
                       "date": share[ranks][0].get("date"),
                       "base": base.name, "base_digest": base.digest()},
        "fit_quality": {**{k: v for k, v in fq.items() if k not in ("scale_up", "scale_out")},
                        "scale_up": {"in_sample": link.get("in_sample"), **{
                            k: v for k, v in link.items() if k != "in_sample"}},
                        "sharing": {k: _sig(v) for k, v in f.items()},
                        **({"sync": sync} if sync else {}),
                        **({"sync_overlap": {**hide, "note": SYNC_OVERLAP_NOTE}} if hide else {})},
    }


def idle_peer_speedup(share: dict[int, list], ranks: int, cores: int,
                      f: dict[str, float]) -> tuple[float, str]:
    """(speedup, source): how much faster one of ``ranks`` ranks computes while its peers wait
    in a collective, when ranks outnumber ``cores``: the GEMM share with one rank per core over
    the share with all ranks busy (measured where the share runs had ``cores`` ranks, else the
    ideal ``ranks / cores``). 1 when every rank has its own core."""
    if ranks <= cores:
        return 1.0, ""
    if cores in share and share[cores]:
        alone = share_factors(share, cores)["gemm_flops_per_s"]
        value = alone / f["gemm_flops_per_s"]
        return value, (f"measured: GEMM share with {cores} ranks on {cores} cores ({alone:.3f}) / "
                       f"with {ranks} ranks ({f['gemm_flops_per_s']:.3f}); costs the expert stage "
                       "of skewed layers as max(heaviest rank alone, all ranks' work / cores)")
    return ranks / cores, (f"assumption: {ranks} ranks / {cores} cores (no share run with "
                           f"{cores} ranks)")


SYNC_OVERLAP_NOTE = (
    "share of min(exchange, GEMM) hidden with a 16 KiB all-to-all in flight during one GEMM; "
    "reported, not used: it scatters between rounds and does not carry over to the layer's "
    "overlap modes (results/overlap-cpu/: two-batch lost time on every config), so "
    "compute.comm_overlap_fraction keeps the base's value")


def overlap_fraction(rounds: list[dict]) -> dict | None:
    """Share of ``min(exchange, GEMM)`` hidden when the sync case's all-to-all is in flight
    during its GEMM: per rank, with per-iteration times ``g`` (GEMM), ``s`` (GEMM then
    exchange) and ``o`` (overlapped), ``(s - o) / min(g, s - g)`` clipped to [0, 1]; median over
    ranks, then rounds. None without overlap samples."""
    import numpy as np

    per_round = []
    for rec in rounds:
        samples = [x for x in rec.get("sync") or [] if "overlap_s" in x]
        if not samples:
            continue
        values = []
        for x in samples:
            g, s_, o = (x[k] / x["iters"] for k in ("compute_s", "compute_a2a_s", "overlap_s"))
            hideable = min(g, s_ - g)
            values.append(float(np.clip((s_ - o) / hideable, 0.0, 1.0)) if hideable > 0 else 0.0)
        per_round.append(float(np.median(values)))
    if not per_round:
        return None
    return {"fraction": _sig(float(np.median(per_round))), "per_round": [_sig(v) for v in per_round]}


def sync_latency(rounds: list[dict], bytes_per_s: float) -> dict | None:
    """The latency of one all-to-all between compute phases, from the share runs' sync case
    (``ep_bench_worker.sync_seconds``): per rank ``(wall(GEMM; a2a) - wall(GEMM)) / iters``
    less the wire time of its bytes, median over ranks, then over rounds. None without it."""
    import numpy as np

    per_round = []
    for rec in rounds:
        samples = rec.get("sync")
        if not samples:
            continue
        ranks = len(samples)
        wire = (ranks - 1) * samples[0]["bytes_per_peer"] / bytes_per_s
        per_round.append(float(np.median([(s["compute_a2a_s"] - s["compute_s"]) / s["iters"]
                                          for s in samples])) - wire)
    if not per_round:
        return None
    return {"latency_s": _sig(max(float(np.median(per_round)), 0.0)),
            "per_round_s": [_sig(v) for v in per_round],
            "wire_s": _sig(wire)}


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _share_sources(share: dict[int, list], ranks: int, f: dict[str, float],
                   sync: dict | None = None, alpha_s: float | None = None) -> dict[str, str]:
    def rates(key):
        alone = ", ".join(f"{r['rates'][key][0]:.4g}" for r in share[1])
        each = "; ".join(", ".join(f"{v:.4g}" for v in r["rates"][key]) for r in share[ranks])
        return f"one rank alone [{alone}]/s; each of {ranks} ranks [{each}]/s, per round"
    loads = [r["load_1m"] for r in share[ranks]]
    loop = (f"measured: each rank loops the case {share[ranks][0]['duration_s']} s after a barrier, "
            f"{len(share[ranks])} rounds (moesim.measure.ep_bench_worker --share-s); load "
            f"{min(loads)}-{max(loads)}")
    return {
        "compute.peak_flops_per_s": f"base peak x {f['gemm_flops_per_s']:.3f}, the measured share "
                                    f"of fp32 512^3 GEMM throughput ({rates('gemm_flops_per_s')}); {loop}",
        "compute.launch_overhead_s": f"base / {f['ops_per_s']:.3f}, the measured share of tiny-op "
                                     f"throughput ({rates('ops_per_s')}); {loop}",
        "memory.bandwidth_bytes_per_s": f"base x {f['copy_bytes_per_s']:.3f}, the measured share of "
                                        f"32 MiB copy throughput ({rates('copy_bytes_per_s')}); {loop}",
        "scale_up.latency_s": (
            f"measured: {sync['latency_s'] * 1e6:.0f} us per all-to-all between compute phases "
            f"(sync case: {SYNC_DOC}; rounds {sync['per_round_s']} s), minus the shared launch "
            f"overhead; back-to-back all-to-alls (the calibration's fit) take "
            f"{alpha_s * 1e6:.0f} us, but a layer never runs them back to back"
            if sync else "measured: alpha of the calibration's all-to-all fit for this rank "
                         "count minus the shared launch overhead"),
    }


SYNC_DOC = ("each rank runs 100 x (256^3 fp32 GEMM; all-to-all of 16 KiB per peer) and 100 x "
            "GEMM alone, after a barrier; latency = the difference per iteration less wire time")
