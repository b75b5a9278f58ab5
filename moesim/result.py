"""Prediction outputs: assembling per-row columns from phase costs, and the result object."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from moesim.core import layer

#: Output columns of ``predict_many`` and their kind.
OUTPUT_COLUMNS = {
    "time_s": "float", "tokens_per_s": "float",
    **{f"{p}_s": "float" for p in layer.PHASES},
    "overlap_hidden_s": "float", "bottleneck": "str", "slowest_device": "float",
    "flops": "float", "hbm_bytes": "float", "intra_node_bytes": "float",
    "inter_node_bytes": "float", "moe_memory_bytes_per_device": "float",
    "memory_capacity_bytes": "float", "moe_fits_in_memory": "float", "load_imbalance": "float",
    "experts_hit_per_device": "float", "tokens_per_expert": "float", "drop_rate": "float",
}


def _pick(arr: np.ndarray, dev: np.ndarray) -> np.ndarray:
    return arr[np.arange(arr.shape[0]), dev]


def assemble_outputs(costs: dict, overlap: np.ndarray, half: dict | None, rows: layer.LayerRows,
                     sub, hw, place, imbalance: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row outputs for the slowest device of each row."""
    phases = costs["phases"]
    total = layer.combine_phases(phases, overlap, half, hides=hw.compute.comm_overlap_fraction)
    dev = total.argmax(axis=1)
    time_s = _pick(total, dev)
    two = overlap == 2
    breakdown = {}
    for p in layer.PHASES:
        breakdown[p] = _pick(phases[p], dev)
        if half is not None:
            breakdown[p][two] = 2.0 * _pick(half[p], dev[two])
    stack = np.stack([breakdown[p] for p in layer.PHASES], axis=1)
    top = stack.argmax(axis=1)
    dispatch, combine = costs["dispatch"], costs["combine"]
    link = np.where(_pick(dispatch.inter_s + combine.inter_s, dev) >
                    _pick(dispatch.intra_s + combine.intra_s, dev), "inter_node", "intra_node")
    resource = {
        "experts": _pick(costs["experts_bound"], dev), "shared_experts": _pick(costs["shared_bound"], dev),
        "dispatch": link, "combine": link,
    }
    names = np.array(layer.PHASES, dtype=object)[top]
    res = np.full(names.shape, "memory", dtype=object)
    for phase, values in resource.items():
        res = np.where(names == phase, values.astype(object), res)
    bottleneck = names + ":" + res

    wbpp = rows.weight_bytes_per_param
    up_n = (rows.matrices - 1) * rows.expert_ffn
    moe_layers = np.asarray(sub["moe_layers"], dtype=float)
    weights = moe_layers * wbpp * (place.slots_per_device * rows.matrices * rows.hidden * rows.expert_ffn
                                   + rows.matrices * rows.hidden * rows.shared_ffn) \
        + moe_layers * rows.hidden * rows.experts * rows.act_bytes
    dev_tokens = costs["dev_tokens"].max(axis=1)
    buffers = dev_tokens * (rows.dispatch_bytes_per_copy + rows.combine_bytes_per_copy
                            + (up_n + rows.expert_ffn) * rows.act_bytes) \
        + 2.0 * rows.tokens * rows.top_k * rows.hidden * rows.act_bytes
    memory = weights + buffers  # MoE layers only (see PredictResult)
    capacity = hw.memory.capacity_bytes
    hit = _pick(costs["experts_hit"], dev)
    return {
        "time_s": time_s,
        "tokens_per_s": rows.tokens * place.num_devices / time_s,
        **{f"{p}_s": breakdown[p] for p in layer.PHASES},
        # summing the phases may round a few ulps below time_s: nothing hidden is 0, not -1e-18
        "overlap_hidden_s": np.maximum(stack.sum(axis=1) - time_s, 0.0),
        "bottleneck": bottleneck,
        "slowest_device": dev.astype(float),
        "flops": _pick(costs["flops"], dev),
        "hbm_bytes": _pick(costs["hbm_bytes"], dev),
        "intra_node_bytes": _pick(dispatch.intra_bytes + combine.intra_bytes, dev),
        "inter_node_bytes": _pick(dispatch.inter_bytes + combine.inter_bytes, dev),
        "moe_memory_bytes_per_device": memory,
        "memory_capacity_bytes": np.full(time_s.shape, capacity),
        "moe_fits_in_memory": (memory <= capacity).astype(float),
        "load_imbalance": imbalance,
        "experts_hit_per_device": hit,
        "tokens_per_expert": _pick(costs["dev_tokens"], dev) / np.maximum(hit, 1e-12),
        "drop_rate": costs.get("drop_rate", np.zeros(time_s.shape)),
    }


@dataclass
class PredictResult:
    """One prediction. Times in seconds, bytes in bytes, per device unless said otherwise.

    ``moe_memory_bytes_per_device``/``moe_fits_in_memory`` count the MoE layers only: the
    routed and shared experts' weights and routers of all ``moe_layers`` on this device plus
    this layer's dispatch and activation buffers. Attention, dense layers, embeddings and the KV
    cache are not counted (whole-model memory belongs beside them, under its own name).
    """

    model: str
    hardware: str
    config: dict
    time_s: float
    tokens_per_s: float
    breakdown_s: dict[str, float]
    bottleneck: str
    flops: float
    hbm_bytes: float
    comm_bytes: dict[str, float]
    moe_memory_bytes_per_device: float
    memory_capacity_bytes: float
    moe_fits_in_memory: bool
    load_imbalance: float
    overlap_hidden_s: float
    experts_hit_per_device: float
    drop_rate: float = 0.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_row(cls, row, model_name: str, hardware: str) -> "PredictResult":
        from moesim.config import MODEL_FIELDS
        from moesim.config.run import RUN_FIELDS

        config = {k: (row[k].item() if hasattr(row[k], "item") else row[k])
                  for k in MODEL_FIELDS + RUN_FIELDS if k in row.index}
        return cls(
            model=model_name, hardware=hardware, config=config, time_s=float(row["time_s"]),
            tokens_per_s=float(row["tokens_per_s"]),
            breakdown_s={p: float(row[f"{p}_s"]) for p in layer.PHASES},
            bottleneck=str(row["bottleneck"]), flops=float(row["flops"]),
            hbm_bytes=float(row["hbm_bytes"]),
            comm_bytes={"intra_node": float(row["intra_node_bytes"]),
                        "inter_node": float(row["inter_node_bytes"])},
            moe_memory_bytes_per_device=float(row["moe_memory_bytes_per_device"]),
            memory_capacity_bytes=float(row["memory_capacity_bytes"]),
            moe_fits_in_memory=bool(row["moe_fits_in_memory"]), load_imbalance=float(row["load_imbalance"]),
            overlap_hidden_s=float(row["overlap_hidden_s"]),
            experts_hit_per_device=float(row["experts_hit_per_device"]),
            drop_rate=float(row["drop_rate"]))

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)

    def __str__(self) -> str:
        from moesim.format import format_result

        return format_result(self)
