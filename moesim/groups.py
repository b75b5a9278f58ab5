"""Rows of a config frame grouped for evaluation: by signature, by distinct config, and into
pieces of work that run on threads when large (numpy's array loops release the GIL, so the
cores share one sweep; rows are evaluated independently, so a split changes no value)."""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

#: Threads evaluating large groups, and the rows from which a piece of work is large (smaller
#: groups are Python-bound: threads would only share the GIL).
WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
PARALLEL_MIN_ROWS = 8_192


def row_groups(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct combination, group id of every row) over ``columns``."""
    codes = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        c, u = pd.factorize(column, use_na_sentinel=False)
        codes = codes * max(len(u), 1) + c
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    return first, inverse


def distinct_configs(columns: list[np.ndarray]):
    """(first row of each distinct config, config of every row) over ``columns``, or None when
    every row is distinct (the common case of a sweep, found without a sort)."""
    varying = [v for v in columns if not (v == v[0]).all()]
    if not varying:
        return np.zeros(1, dtype=int), np.zeros(len(columns[0]), dtype=int)
    if len(varying) == 1 and len(pd.unique(varying[0])) == len(varying[0]):
        return None
    first, inverse = row_groups(varying)
    return None if len(first) == len(inverse) else (first, inverse)


def split_tasks(bounds: np.ndarray, workers: int) -> list[tuple[int, slice]]:
    """(group, rows) pieces of work over groups ``bounds[g]:bounds[g + 1]``: every group, the
    large ones split in ``workers`` parts."""
    total = int(bounds[-1])
    out = []
    for g in range(len(bounds) - 1):
        lo, hi = int(bounds[g]), int(bounds[g + 1])
        parts = workers if workers > 1 and hi - lo >= max(total // 4, 2 * PARALLEL_MIN_ROWS) \
            else 1
        edges = np.linspace(lo, hi, parts + 1).astype(int)
        out += [(g, slice(a, b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return out


def run_tasks(evaluate: Callable[[tuple[int, slice]], None], bounds: np.ndarray) -> None:
    """``evaluate`` every piece of :func:`split_tasks`: small ones in turn, large ones (two or
    more) on ``WORKERS`` threads; the first error, in task order, is raised."""
    tasks = split_tasks(bounds, WORKERS)
    large = [t for t in tasks if t[1].stop - t[1].start >= PARALLEL_MIN_ROWS]
    for task in tasks:
        if len(large) < 2 or task not in large:
            evaluate(task)
    if len(large) >= 2:
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(evaluate, large))
