"""Measurement side of moesim: real MoE layers in torch, instrumented by phase.

The only moesim package besides ``moesim.harness`` that imports torch. ``forced``, ``cases``,
``journal``, ``runner`` and ``scenario_hook`` (``run_scenario_measurements``, the scenarios'
``mode: measure`` hook) are torch-free; the workers they launch import torch.
Names are imported lazily, so ``moesim.measure.forced`` loads without torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "MoELayer": "layers", "EPMoELayer": "ep", "EPStats": "ep",
    "sample_inclusion_ids": "forced", "forced_topk_ids": "forced",
    "ReplicaTable": "placement", "grouped_mm_supported": "experts",
    "run_scenario_measurements": "scenario_hook", "MeasureSettings": "cases",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'moesim.measure' has no attribute {name!r}")
    return getattr(importlib.import_module(f"moesim.measure.{_EXPORTS[name]}"), name)
