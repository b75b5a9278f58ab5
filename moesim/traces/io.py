"""The routing trace file: per-layer expert choices in one ``.npz`` (numpy only).

Keys, one pair per recorded MoE layer ``L`` (the decoder-layer index of the model):

* ``ids_L``: ``[num_tokens, num_topk]`` int16 (int32 above 32767 experts), the experts each
  token was routed to, distinct within a row, in the order the router returned them;
* ``weights_L``: ``[num_tokens, num_topk]`` float16, the routing weights the model applies to
  those experts (NaN where the router does not return them);
* ``metadata``: a JSON string with at least ``num_experts``, ``num_topk``, ``num_tokens`` and
  ``layers``; ``moesim trace record`` adds the model, its config, the prompts' hash, versions and
  the date.

Token ``i`` of every layer is the same token, in prompt order then position order.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moesim.config.errors import ConfigError
from moesim.config.files import checked_size
from moesim.config.limits import MAX_TEXT_TRACE_BYTES, MAX_TRACE_BYTES, limit_error

FORMAT = "moesim-trace"
FORMAT_VERSION = 1
_REQUIRED = ("num_experts", "num_topk", "num_tokens", "layers")


@dataclass
class Trace:
    """A loaded trace: ``ids[L]``/``weights[L]`` ``[num_tokens, num_topk]`` per layer ``L``."""

    ids: dict[int, np.ndarray]
    weights: dict[int, np.ndarray]
    metadata: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.ids)

    @property
    def num_experts(self) -> int:
        return int(self.metadata["num_experts"])

    @property
    def num_topk(self) -> int:
        return int(self.metadata["num_topk"])

    @property
    def num_tokens(self) -> int:
        return int(self.metadata["num_tokens"])

    def pooled(self) -> np.ndarray:
        """All layers' ids, stacked layer by layer: ``[layers * num_tokens, num_topk]``."""
        return np.concatenate([self.ids[layer] for layer in self.layers], axis=0)


def ids_dtype(num_experts: int) -> type:
    return np.int16 if num_experts <= np.iinfo(np.int16).max else np.int32


def save_trace(path: str | Path, ids: dict[int, np.ndarray], num_experts: int,
               weights: dict[int, np.ndarray] | None = None, metadata: dict | None = None) -> Path:
    """Write a trace (see the module docstring); ``metadata`` is merged into the required keys."""
    layers = sorted(int(layer) for layer in ids)
    if not layers:
        raise ConfigError("a trace needs at least one layer", file=str(path))
    first = np.asarray(ids[layers[0]])
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **(metadata or {}),
            "num_experts": int(num_experts), "num_topk": int(first.shape[1]),
            "num_tokens": int(first.shape[0]), "layers": layers}
    arrays = {"metadata": np.array(json.dumps(meta, sort_keys=True, default=str))}
    dtype = ids_dtype(num_experts)
    for layer in layers:
        arrays[f"ids_{layer}"] = np.asarray(ids[layer]).astype(dtype)
        w = None if weights is None else weights.get(layer)
        w = np.full(first.shape, np.nan) if w is None else np.asarray(w)
        arrays[f"weights_{layer}"] = w.astype(np.float16)
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")  # what np.savez would write
    try:
        np.savez_compressed(path, **arrays)
    except OSError as exc:
        raise ConfigError(f"cannot write trace: {exc.strerror}", file=str(path),
                          field="out") from None
    _check(Trace(_int_keys(arrays, "ids_"), _int_keys(arrays, "weights_"), meta), str(path))
    return path


def _int_keys(arrays, prefix: str) -> dict[int, np.ndarray]:
    return {int(k[len(prefix):]): np.asarray(v) for k, v in arrays.items() if k.startswith(prefix)}


def read_trace(path: str | Path) -> Trace:
    """Load and validate a trace file; anything unexpected is a ConfigError naming the file."""
    path = Path(path)
    name = str(path)
    checked_size(path, MAX_TRACE_BYTES, "MAX_TRACE_BYTES", "routing", "trace")
    check_decoded_size(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"a single array of shape {np.shape(data)}, not an .npz archive")
        with data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"cannot read trace: {exc}; expected an .npz written by "
                          "'moesim trace record'", file=name, field="routing") from None
    if "metadata" not in arrays:
        raise ConfigError("no 'metadata' entry; expected a JSON string with "
                          f"{', '.join(_REQUIRED)}", file=name, field="routing")
    try:
        meta = json.loads(str(arrays["metadata"][()]))
    except (json.JSONDecodeError, IndexError, TypeError) as exc:
        raise ConfigError(f"'metadata' is not valid JSON ({exc}); expected a JSON object",
                          file=name, field="routing") from None
    missing = [k for k in _REQUIRED if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ConfigError(f"'metadata' lacks {', '.join(missing)}; expected "
                          f"{', '.join(_REQUIRED)}", file=name, field="routing")
    ids = {}
    for layer in meta["layers"]:
        for key in (f"ids_{layer}", f"weights_{layer}"):
            if key not in arrays:
                raise ConfigError(f"no '{key}' entry for layer {layer} listed in metadata; "
                                  f"expected ids_L and weights_L for every layer", file=name,
                                  field="routing")
        ids[int(layer)] = arrays[f"ids_{layer}"]
    trace = Trace(ids, {int(L): arrays[f"weights_{L}"] for L in meta["layers"]}, meta)
    _check(trace, name)
    return trace


def _header_elements(f) -> int:
    """Elements an .npy stream announces in its header (0 for a version numpy cannot read)."""
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    return int(np.prod(read(f)[0], dtype=float)) if read else 0


def check_decoded_size(path: str | Path) -> None:
    """Refuse an .npy, or an .npz whose members, once decoded as int64 (as the ids are), would
    exceed MAX_TRACE_BYTES (a 1 MB .npz can hold 1 GB of zeros): read from the .npy headers
    before anything is loaded."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                elements = 0
                for member in archive.namelist():
                    with archive.open(member) as f:
                        elements += _header_elements(f)
        else:
            with open(path, "rb") as f:
                elements = _header_elements(f)
    except (OSError, ValueError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise ConfigError(f"cannot read trace: {exc}; expected an .npy or an .npz written by "
                          "'moesim trace record'", file=str(path), field="routing") from None
    if elements * 8 > MAX_TRACE_BYTES:
        raise ConfigError(limit_error("decoded trace size (bytes, as int64)", elements * 8,
                                      MAX_TRACE_BYTES, "MAX_TRACE_BYTES"), file=str(path),
                          field="routing")


def _check(trace: Trace, name: str) -> None:
    """Shapes, dtypes and id ranges agree with the metadata."""
    shape = (trace.num_tokens, trace.num_topk)
    experts = trace.num_experts
    if not trace.ids:
        raise ConfigError("metadata lists no layers; expected at least one", file=name,
                          field="routing")
    for layer in trace.layers:
        ids, w = trace.ids[layer], trace.weights[layer]
        where = f"layer {layer}: "
        if ids.shape != shape or not np.issubdtype(ids.dtype, np.integer):
            raise ConfigError(f"{where}ids have shape {ids.shape} ({ids.dtype}); expected "
                              f"integers of shape [num_tokens, num_topk] = {list(shape)}",
                              file=name, field="routing")
        if w.shape != shape:
            raise ConfigError(f"{where}weights have shape {w.shape}; expected {list(shape)}",
                              file=name, field="routing")
        if ids.size and (ids.min() < 0 or ids.max() >= experts):
            raise ConfigError(f"{where}expert ids in [{ids.min()}, {ids.max()}]; expected ids in "
                              f"[0, {experts - 1}] (num_experts={experts})", file=name,
                              field="routing")
        rows = np.sort(ids, axis=1)
        if shape[1] > 1 and (rows[:, 1:] == rows[:, :-1]).any():
            raise ConfigError(f"{where}a token lists the same expert twice; expected "
                              "num_topk distinct experts per token", file=name, field="routing")


def split_layer(path: str) -> tuple[str, int | None]:
    """``'x.npz@3'`` -> ``('x.npz', 3)``; a path without ``@LAYER`` -> ``(path, None)``."""
    head, sep, tail = str(path).rpartition("@")
    if sep and tail.isdigit() and head:
        return head, int(tail)
    return str(path), None


def trace_ids(path: str | Path, layer: int | None = None) -> np.ndarray:
    """Expert ids ``[num_tokens, num_topk]`` of one layer, or all layers pooled (``layer=None``)."""
    trace = read_trace(path)
    if layer is None:
        return trace.pooled()
    if layer not in trace.ids:
        raise ConfigError(f"no layer {layer} in the trace; expected one of {trace.layers}",
                          file=str(path), field="routing")
    return trace.ids[layer]


def load_trace(path: str | Path) -> np.ndarray:
    """Expert ids ``[num_tokens, top_k]`` (int64) from ``.npy``, text or a trace ``.npz``.

    ``FILE.npz`` pools all recorded layers (stacked layer after layer along tokens);
    ``FILE.npz@LAYER`` takes one layer. ``trace:PATH`` routing specs name such a file.
    """
    file, layer = split_layer(str(path))
    if Path(file).suffix == ".npz":
        return trace_ids(file, layer).astype(np.int64)
    if layer is not None and not Path(path).exists():
        raise ConfigError(f"'@{layer}' selects a layer of an .npz trace; expected "
                          "'trace:FILE.npz@LAYER'", file=file, field="routing")
    path = Path(path)
    text = path.suffix != ".npy"
    checked_size(path, MAX_TEXT_TRACE_BYTES if text else MAX_TRACE_BYTES,
                 "MAX_TEXT_TRACE_BYTES" if text else "MAX_TRACE_BYTES", "routing", "trace")
    if not text:
        check_decoded_size(path)
    try:
        if path.suffix == ".npy":
            ids = np.load(path, allow_pickle=False)
        else:
            ids = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read trace: {exc}", file=str(path), field="routing") from None
    if ids.ndim != 2 or ids.size == 0:
        raise ConfigError(f"trace must be a 2-D table [num_tokens, top_k], got shape {ids.shape}",
                          file=str(path), field="routing")
    return ids.astype(np.int64)
