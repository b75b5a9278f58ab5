"""Routing traces: record per-layer expert choices from a model, read them, summarise them.

``io`` (the ``.npz`` trace format) and ``stats`` are numpy only, like ``moesim.core``;
``record``/``hooks`` need torch and transformers (``pip install 'moesim[trace]'``) and are
imported only when recording. ``moesim.core.routing`` reads traces through ``io``
(``trace:FILE.npz`` and ``trace:FILE.npz@LAYER``).
"""
from moesim.traces.io import Trace, read_trace, save_trace, trace_ids

__all__ = ["Trace", "read_trace", "save_trace", "trace_ids"]
