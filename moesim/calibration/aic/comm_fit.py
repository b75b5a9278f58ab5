"""All-to-all kernel families from AIConfigurator's communication tables.

Each family (DeepEP normal / low-latency as each engine wires it, NCCL all-to-all) gets the
alpha-beta law of :mod:`moesim.core.comm` on the NVLink class (every table row is one node):

    t = latency_s + bytes / bandwidth_bytes_per_s

``bytes`` = what one GPU sends to other GPUs: DeepEP moves each token once per distinct remote
rank among its top-k experts, ``T * r * (ep - 1) / ep`` copies with ``r = ep (1 - (1 - 1/ep)^k)``
ranks hit under uniform routing, of ``hidden * 2`` bytes (bf16 payload; fp8 dispatch is folded
into the fitted bandwidth); NCCL all-to-all sends ``message_size * (n - 1) / n``. Fit: least
squares on log time (relative error) over rows with even token-count rank, with latency and
bandwidth > 0; the other rows are left out (fit quality).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from moesim.calibration.aic import reader
from moesim.calibration.aic.gemm_fit import errors_pct

DEEPEP_RANKS = 8  # single-node tables: the node's 8 GPUs


def deepep_bytes(tokens, top_k, hidden, ep: int = DEEPEP_RANKS) -> np.ndarray:
    ranks_hit = ep * (1.0 - (1.0 - 1.0 / ep) ** np.asarray(top_k, dtype=float))
    return np.asarray(tokens, float) * ranks_hit * (ep - 1) / ep * np.asarray(hidden, float) * 2.0


#: Fastest effective bandwidth a fit may report: a table whose times do not grow with its bytes
#: (a latency-bound kernel) drives the unbounded fit to 1e26 B/s; 1e14 B/s is 50x the fastest
#: link any of these systems has (NVLink 5, 1.8e12 B/s per direction), so the bytes term stays
#: negligible there, as measured, and the profile stays within its schema's range.
MAX_FIT_BYTES_PER_S = 1e14


def fit_alpha_beta(nbytes: np.ndarray, t_s: np.ndarray) -> tuple[float, float]:
    """(latency_s, bandwidth_bytes_per_s) minimising the relative error of t = a + b / bw,
    with bw <= :data:`MAX_FIT_BYTES_PER_S`."""
    def resid(p):
        return np.log(np.exp(p[0]) + nbytes * np.exp(p[1])) - np.log(t_s)
    start = [np.log(max(np.min(t_s), 1e-7)), np.log(1e-11)]
    lower = [-np.inf, -np.log(MAX_FIT_BYTES_PER_S)]
    sol = least_squares(resid, start, bounds=(lower, [np.inf, np.inf]))
    return float(np.exp(sol.x[0])), float(1.0 / np.exp(sol.x[1]))


def _family(nbytes, t_s, sizes) -> dict:
    order = pd.Series(sizes).rank(method="dense").to_numpy()
    train = order % 2 == 0
    lat, bw = fit_alpha_beta(nbytes[train], t_s[train])
    pred = lat + nbytes / bw
    return {"latency_s": round(lat, 9), "bandwidth_bytes_per_s": round(bw, 1),
            "rows": int(len(t_s)),
            "in_sample": errors_pct(pred[train], t_s[train]),
            "holdout": errors_pct(pred[~train], t_s[~train])}


def _tables(system: str, backend: str, root=None) -> list[tuple[str, pd.DataFrame, dict]]:
    """(family, rows with tokens/top_k/hidden/phase/t_s, provenance) per available table."""
    out = []
    if backend in reader.backends(system, "wideep_deepep_normal_perf", root):
        for table, name, cols in (
                ("wideep_deepep_normal_perf", "deepep_normal",
                 {"dispatch": ["dispatch_transmit_us", "dispatch_notify_us"],
                  "combine": ["combine_transmit_us", "combine_notify_us"]}),
                ("wideep_deepep_ll_perf", "deepep_ll",
                 {"dispatch": ["dispatch_avg_t_us"], "combine": ["combine_avg_t_us"]})):
            ref = reader.locate(system, table, backend, root=root)
            df = reader.load(ref)
            for phase, c in cols.items():
                rows = pd.DataFrame({"tokens": df.num_token, "top_k": df.num_topk,
                                     "hidden": df.hidden_size, "t_s": df[c].sum(axis=1) * 1e-6})
                out.append((f"{name}/{phase}", _fastest(rows), ref.provenance(len(df))))
    if backend in reader.backends(system, "moe_a2a_perf", root):
        ref = reader.locate(system, "moe_a2a_perf", backend, root=root)
        df = reader.load(ref)
        df = df[df.comm_dtype.isin(["bfloat16", "default"])]
        for (kind, phase), g in df.groupby(["comm_backend", "phase"]):
            fam = "deepep_ll" if kind.endswith("_ll") else "deepep_normal"
            rows = pd.DataFrame({"tokens": g.num_tokens, "top_k": g.topk, "hidden": g.hidden_size,
                                 "t_s": g.latency * 1e-6})
            out.append((f"{fam}/{phase}", _fastest(rows), ref.provenance(len(df))))
    return out


def _fastest(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (tokens, top-k, hidden): the fastest SM setting the table tried."""
    return rows.groupby(["tokens", "top_k", "hidden"], as_index=False)["t_s"].min()


def fit_comm(system: str, backend: str, root=None) -> tuple[dict, dict]:
    """(``alltoall_kernels`` section, provenance) for the backend's DeepEP tables and NCCL."""
    kernels, prov = {}, {}
    for key, rows, p in _tables(system, backend, root):
        nbytes = deepep_bytes(rows.tokens, rows.top_k, rows.hidden)
        kernels[key] = _family(nbytes, rows.t_s.to_numpy(), rows.tokens.to_numpy())
        prov[key] = p
    nccl = reader.backends(system, "nccl_perf", root)
    if nccl:
        ref = reader.locate(system, "nccl_perf", nccl[0], root=root)
        df = reader.load(ref)
        a2a = df[(df.op_name == "alltoall") & (df.num_gpus == df.num_gpus.max())]
        if len(a2a):
            n = a2a.num_gpus.to_numpy(float)
            nbytes = a2a.message_size.to_numpy(float) * (n - 1) / n
            kernels["nccl/alltoall"] = _family(nbytes, a2a.latency.to_numpy() * 1e-3,
                                               a2a.message_size.to_numpy())
            kernels["nccl/alltoall"]["num_gpus"] = int(a2a.num_gpus.max())
            prov["nccl/alltoall"] = ref.provenance(len(df))
    return kernels, prov
