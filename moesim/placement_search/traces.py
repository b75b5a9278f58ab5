"""Per-batch expert loads from routing traces, and routing drift.

Loads are ``[num_batches, num_experts]`` (token, expert) pairs per batch. Sources:

- a ``.npz`` with an array ``loads`` ``[batches, experts]`` or ``[batches, layers, experts]``
  (``FILE.npz@LAYER`` picks a layer), as ``save_batch_loads`` writes;
- a ``moesim trace record`` ``.npz`` (``FILE.npz@LAYER``; one layer, since a placement is per
  layer) or any token table ``moesim.traces.io.load_trace`` reads (expert ids
  ``[num_tokens, top_k]``), cut into consecutive batches of ``batch_tokens`` tokens.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from moesim.config.errors import ConfigError
from moesim.placement_search.proxy import inclusion_from_loads
from moesim.traces.io import load_trace


def _split_layer(spec: str) -> tuple[str, int | None]:
    text = spec.removeprefix("trace:")
    path, at, layer = text.rpartition("@")
    if at and layer.isdigit():
        return path, int(layer)
    return text, None


def load_batch_loads(spec: str, num_experts: int, batch_tokens: int | None = None) -> np.ndarray:
    """Loads ``[batches, num_experts]`` from ``spec`` (a path, optionally ``trace:`` and ``@LAYER``)."""
    path, layer = _split_layer(str(spec))
    if Path(path).suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                if "loads" in data.files:
                    return _check(_pick_layer(np.asarray(data["loads"], dtype=float), layer,
                                              path), num_experts, path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read trace: {exc}", file=path, field="trace") from None
        from moesim.traces.io import read_trace

        if layer is None and len(read_trace(path).layers) > 1:
            raise ConfigError("the trace records several layers; pick one as FILE.npz@LAYER "
                              "(a placement is per layer)", file=path, field="trace")
    ids = load_trace(f"{path}@{layer}" if layer is not None else path)
    if ids.min() < 0 or ids.max() >= num_experts:
        raise ConfigError(f"trace ids must be in [0, {num_experts - 1}]", file=path, field="trace")
    per = int(batch_tokens) if batch_tokens else ids.shape[0]
    batches = max(1, ids.shape[0] // per)
    out = np.zeros((batches, num_experts))
    for b in range(batches):
        out[b] = np.bincount(ids[b * per:(b + 1) * per].ravel(), minlength=num_experts)
    return out


def _pick_layer(loads: np.ndarray, layer: int | None, path: str) -> np.ndarray:
    if loads.ndim == 3:
        if layer is None or not 0 <= layer < loads.shape[1]:
            raise ConfigError(f"loads has {loads.shape[1]} layers; name one as FILE.npz@LAYER",
                              file=path, field="trace")
        return loads[:, layer, :]
    return loads


def _check(loads: np.ndarray, num_experts: int, path: str) -> np.ndarray:
    if loads.ndim != 2 or loads.shape[1] != num_experts or (loads < 0).any():
        raise ConfigError(f"loads must be [batches, {num_experts}] and >= 0, got shape "
                          f"{loads.shape}", file=path, field="trace")
    return loads


def save_batch_loads(path: str | Path, loads: np.ndarray) -> None:
    """Write ``loads`` (``[batches, experts]`` or ``[batches, layers, experts]``) as ``.npz``."""
    np.savez_compressed(path, loads=np.asarray(loads, dtype=float))


def drift_loads(q: np.ndarray, sigma: float, top_k: int, samples: int,
                seed: int = 0) -> np.ndarray:
    """``samples`` drifted routings ``[samples, experts]``: each expert's share multiplied by
    ``exp(sigma * N(0, 1))``, renormalised to inclusion probabilities (``sum == top_k``)."""
    rng = np.random.default_rng(seed)
    noise = np.exp(sigma * rng.standard_normal((samples, np.size(q))))
    return np.stack([inclusion_from_loads(np.asarray(q) * n, top_k) for n in noise])
