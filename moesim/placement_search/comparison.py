"""Compare placement strategies with ``moesim.predict``: gain, re-balancing cost, staleness.

For each strategy and each replication budget (none, and the layout's redundant slots) the
strategy places experts for the *fit* routing, and ``moesim.predict(..., placement=, q=)``
gives the layer time. Then:

- **move**: expert weights to move from the current placement (default: contiguous) to the
  new one, and the time over the links (``movement.movement_cost``);
- **drift**: later routings -- the next batches of a trace, or ``drift_samples`` perturbed
  copies of ``q`` (``traces.drift_loads``). ``stale_time_s`` is the mean predicted time of the
  placement chosen on the fit routing under the later ones; ``fresh_time_s`` that of running
  the strategy again on each later routing; ``staleness`` = stale / fresh - 1; ``rebalance_gb``
  the mean bytes that re-running would move.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moesim.config import load_model, load_profile
from moesim.core.placement import Placement
from moesim.placement_search import movement
from moesim.placement_search import strategies as strat
from moesim.placement_search.layout import Layout
from moesim.placement_search.proxy import inclusion_from_loads, time_cost
from moesim.placement_search.traces import drift_loads

BUILTIN = ("contiguous", "round-robin", "greedy", "greedy+ls", "eplb", "eplb+ls")
COLUMNS = ["strategy", "redundant", "time_s", "speedup", "load_imbalance", "max_copies",
           "move_copies", "move_gb", "move_time_s", "stale_time_s", "fresh_time_s", "staleness",
           "rebalance_gb", "search_s"]


@dataclass(frozen=True)
class Problem:
    """One MoE layer on an EP group: ``tokens`` per device, ``run`` = other predict overrides
    (``overlap``, ``a2a_kernel``, ``capacity_factor``...)."""

    model: object  # MoEModel
    hardware: str
    tokens: int
    ep: int
    redundant_slots: int = 0
    run: dict = field(default_factory=dict)

    @property
    def hw(self):
        return load_profile(self.hardware)

    def layout(self, redundant: int | None = None) -> Layout:
        r = self.redundant_slots if redundant is None else redundant
        return Layout(self.ep, self.hw.scale_up.domain_size, r, self.model.num_groups,
                      self.model.topk_groups, proxy=time_cost(self.model, self.hw, self.tokens,
                                                              self.ep))

    def predict(self, place: Placement, q: np.ndarray):
        from moesim import predict

        return predict(self.model, self.hardware, self.tokens, placement=place,
                       q=inclusion_from_loads(q, self.model.top_k), **self.run)


def make_problem(model, hardware: str, tokens: int, ep: int, redundant: int = 0,
                 **run) -> Problem:
    return Problem(load_model(model), str(hardware), int(tokens), int(ep), int(redundant), run)


@dataclass
class Comparison:
    table: pd.DataFrame
    placements: dict  # (strategy, redundant) -> Placement
    q: np.ndarray  # the fit routing's inclusion probabilities

    def best(self, strategies=None, tolerance: float = 1e-3) -> tuple[str, int]:
        """(strategy, redundant) of the fastest row (among ``strategies`` if given); rows
        within ``tolerance`` of it count as ties, broken by the fewest bytes moved."""
        table = self.table
        if strategies is not None and table["strategy"].isin(strategies).any():
            table = table[table["strategy"].isin(strategies)]
        near = table[table["time_s"] <= table["time_s"].min() * (1 + tolerance)]
        row = near.loc[near["move_gb"].fillna(0.0).idxmin()]
        return str(row["strategy"]), int(row["redundant"])


def _later_routings(loads: np.ndarray, top_k: int, fit_batches: int, horizon: int,
                    drift: float, drift_samples: int, seed: int):
    """(fit loads [E], later routings [n, E]) from q [E] or per-batch loads [batches, E]."""
    loads = np.asarray(loads, dtype=float)
    if loads.ndim == 2 and loads.shape[0] > 1:
        fit = loads[:fit_batches].sum(axis=0)
        later = loads[fit_batches:fit_batches + horizon]
        return fit, np.stack([inclusion_from_loads(b, top_k) for b in later]) if len(later) else \
            np.zeros((0, loads.shape[1]))
    fit = loads.reshape(-1)
    if drift <= 0 or drift_samples <= 0:
        return fit, np.zeros((0, fit.size))
    return fit, drift_loads(inclusion_from_loads(fit, top_k), drift, top_k, drift_samples, seed)


def compare(problem: Problem, loads: np.ndarray, strategies=BUILTIN, *, current=None,
            drift: float = 0.3, drift_samples: int = 3, fit_batches: int = 1, horizon: int = 4,
            seed: int = 0) -> Comparison:
    """Table of strategies x replication budgets (see module docstring).

    ``loads``: inclusion probabilities / expected loads ``[experts]``, or per-batch loads
    ``[batches, experts]`` (fit on the first ``fit_batches``, drift = the next ``horizon``).
    ``strategies``: names, ``module:function`` paths or callables. ``current``: the deployed
    placement that moves are counted from (default contiguous when it exists).
    """
    model = problem.model
    fit, later = _later_routings(loads, model.top_k, fit_batches, horizon, drift, drift_samples,
                                 seed)
    q = inclusion_from_loads(fit, model.top_k)
    if current is None and model.experts % problem.ep == 0:
        current = strat.contiguous(q, problem.layout(0))
    budgets = [r for r in sorted({0, problem.redundant_slots})
               if (model.experts + r) % problem.ep == 0]
    if not budgets:
        problem.layout().slots_per_device(model.experts)  # raises the divisibility error
    rows, placements = [], {}
    for spec in _with_baseline(strategies):
        name, fn = strat.resolve(spec)
        for r in budgets:
            if r and name in strat.NO_REPLICATION:  # (budgets hold 0 whenever ep divides E)
                continue
            rows.append(_row(problem, name, fn, r, fit, q, later, current, placements))
    table = pd.DataFrame(rows, columns=COLUMNS)
    base = table[(table["strategy"] == "contiguous") & (table["redundant"] == 0)]["time_s"]
    table["speedup"] = float(base.iloc[0]) / table["time_s"] if len(base) else np.nan
    return Comparison(table, placements, q)


def _with_baseline(strategies) -> list:
    items = [strategies] if isinstance(strategies, str) or callable(strategies) else list(strategies)
    if not any(s == "contiguous" for s in items if isinstance(s, str)):
        items.insert(0, "contiguous")
    return items


def _row(problem: Problem, name: str, fn, redundant: int, fit: np.ndarray, q: np.ndarray,
         later: np.ndarray, current, placements: dict) -> dict:
    layout = problem.layout(redundant)
    start = time.perf_counter()
    place = strat.run_strategy(fn, fit, layout)
    search_s = time.perf_counter() - start
    placements[(name, redundant)] = place
    result = problem.predict(place, q)
    move = movement.movement_cost(current, place, problem.model, problem.hw) if current else None
    stale, fresh, regb = [], [], []
    for q_later in later:
        stale.append(problem.predict(place, q_later).time_s)
        again = strat.run_strategy(fn, q_later, layout)
        fresh.append(problem.predict(again, q_later).time_s)
        regb.append(movement.movement_cost(place, again, problem.model, problem.hw).bytes / 1e9)
    mean = (lambda xs: float(np.mean(xs)) if xs else np.nan)
    return {"strategy": name, "redundant": redundant, "time_s": result.time_s, "speedup": np.nan,
            "load_imbalance": result.load_imbalance, "max_copies": int(place.replicas().max()),
            "move_copies": move.copies if move else np.nan,
            "move_gb": move.bytes / 1e9 if move else np.nan,
            "move_time_s": move.time_s if move else np.nan,
            "stale_time_s": mean(stale), "fresh_time_s": mean(fresh),
            "staleness": mean(stale) / mean(fresh) - 1 if stale else np.nan,
            "rebalance_gb": mean(regb), "search_s": search_s}


def format_table(table: pd.DataFrame) -> str:
    """Fixed-width text table, times in microseconds."""
    head = (f"{'strategy':<16}{'R':>4}{'time us':>10}{'speedup':>8}{'imbal':>7}{'copies':>7}"
            f"{'move GB':>9}{'move ms':>9}{'stale us':>10}{'fresh us':>10}{'stale%':>8}"
            f"{'rebal GB':>9}")
    lines = [head]
    for _, r in table.iterrows():
        lines.append(
            f"{r['strategy']:<16}{int(r['redundant']):>4}{r['time_s'] * 1e6:>10.1f}"
            f"{r['speedup']:>8.2f}{r['load_imbalance']:>7.2f}{int(r['max_copies']):>7}"
            f"{r['move_gb']:>9.2f}{r['move_time_s'] * 1e3:>9.2f}{r['stale_time_s'] * 1e6:>10.1f}"
            f"{r['fresh_time_s'] * 1e6:>10.1f}{r['staleness'] * 100:>7.1f}%{r['rebalance_gb']:>9.2f}")
    return "\n".join(lines)
