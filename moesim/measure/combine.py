"""One record per measured config from every rank's samples (numpy only).

The worker (``moesim.measure.ep_bench_worker``) times each rank's forwards and phases;
:func:`combine_ranks` turns the ranks' samples into the layer time and phase times of the
record the journal keeps.
"""
from __future__ import annotations

import numpy as np

from moesim.core.layer import PHASES
from moesim.harness.host import foreign_cpu

COMM_PHASES = ("dispatch", "combine")
#: Consecutive layers one timed forward runs under two-batch overlap: the pipeline of the two
#: micro-batches continues across them, and the times are reported per layer.
TWO_BATCH_LAYERS = 4


def stack_depth(case: dict) -> int:
    return TWO_BATCH_LAYERS if case.get("overlap") == "two-batch" else 1


def combine_ranks(case: dict, per_rank: list[dict]) -> dict:
    """One record from every rank's samples. Per repeat:

    - ``total_s``, the layer time: from the moment the last rank began its first phase to the
      moment the last rank ended its last one (one monotonic clock on this host). Starting at
      the last rank removes the barrier's exit skew; timing phases only leaves out the
      harness's own work in the forward (validating the forced ids, EP byte statistics:
      30-260 us here);
    - ``wall_s``: the slowest rank's whole forward, from its own barrier exit;
    - ``phases_s``: compute phases of the critical rank (most compute: the one the others wait
      for); dispatch and combine from the moment the last rank entered the exchange to the
      moment the last rank left it: the exchange on the critical path, including waking the
      ranks that slept in it, not the wait for stragglers (records without entry/exit marks:
      the shortest over ranks).
    """
    depth = stack_depth(case)  # layers per timed forward: every time below is per layer
    walls = np.array([r["total_s"] for r in per_rank]) / depth                # [ranks, repeats]
    spans = np.array([r["span_s"] for r in per_rank], dtype=float)            # [ranks, repeats, 2]
    totals = (spans[:, :, 1].max(axis=0) - spans[:, :, 0].max(axis=0)) / depth
    phases = {p: np.array([r["phases_s"][p] for r in per_rank]) / depth for p in PHASES}
    compute = sum(phases[p] for p in PHASES if p not in COMM_PHASES)
    critical = compute.argmax(axis=0)                                          # [repeats]
    cols = np.arange(walls.shape[1])
    pick = {p: phases[p].min(axis=0) if p in COMM_PHASES else phases[p][critical, cols]
            for p in PHASES}
    for p in COMM_PHASES:
        if all(r.get("marks_s") for r in per_rank):
            m = np.array([r["marks_s"][p] for r in per_rank], dtype=float)  # [ranks, repeats, 2]
            if np.isfinite(m).all():
                pick[p] = m[:, :, 1].max(axis=0) - m[:, :, 0].max(axis=0)
    return {**foreign_cpu([r.get("window") for r in per_rank]),
        "key": case["key"], "ep": len(per_rank), "threads_per_rank": per_rank[0]["threads"],
        "repeats": int(case["repeats"]), "warmup": int(case["warmup"]),
        "cache_bytes": int(case.get("cache_bytes", 0)), "layer_copies": per_rank[0]["layer_copies"],
        "layers_per_forward": depth,
        "total_s": totals.tolist(), "wall_s": walls.max(axis=0).tolist(),
        "phases_s": {p: v.tolist() for p, v in pick.items()},
        "critical_rank": critical.tolist(),
        "rank_median_s": np.median(compute, axis=1).tolist(),
        "slot_counts": [c for r in per_rank for c in r["slot_counts"]],
    }
