"""Decode throughput with experts offloaded to host memory (``moesim offload``).

Memory: a model whose weights exceed device memory keeps its non-expert weights, the KV cache
and a runtime reserve on the device and fills the rest with a cache of experts
(``cache_experts='auto'``); every other expert lives in host memory.

Non-expert weights (documented formula; ``NonExpertShape`` gives the shape numbers the presets
lack, known ones in ``KNOWN_SHAPES`` with their sources, otherwise the assumption
``DEFAULT_SHAPE``)::

    attention / layer = hidden * q_dim (Q) + q_dim * hidden (O) + 2 * hidden * kv_dim (K, V)
    per MoE layer     + router hidden * experts + shared experts
    per dense layer   + FFN of width (top_k + shared_experts) * expert_ffn   (assumption: the
                        active width of a MoE layer; exact for DeepSeek-V3's 18432)
    norms             2 * hidden per layer + hidden
    embeddings        vocab * hidden, twice unless tied (input table + LM head)

in the weight dtype. Mixtral-8x7B: 1.34 B attention + 0.26 B embeddings + 1 M router = 1.61 B
parameters (3.2 GB in bf16) next to 45.1 B expert parameters (90.2 GB). KV cache:
``2 * layers * kv_dim * activation bytes * context * batch`` (GQA/MHA; it overstates MLA
models such as DeepSeek-V3). Reserve: the profile's ``memory.reserved_bytes`` (an assumption
with its rationale in the profile). The expert cache is split evenly over
the MoE layers (each layer caches its own experts).

Per decode step of ``batch`` tokens (one per sequence):

- each MoE layer: the on-device layer time from ``moesim.predict`` (ep=1) plus fetching the
  missed experts (``moesim.core.expert_cache``: per-layer cache, LRU or popularity, hit rates in
  closed form from the routing or simulated on a trace) over the profile's ``host_link`` at
  ``host_efficiency`` (default: the profile's ``efficiency.host_link_bandwidth``);
- ``overlap='sum'``: fetches stall the layer; ``'max'``: they overlap its compute
  (``max(compute, fetch)``, an optimistic bound);
- prefetch with accuracy ``a``: during the previous layer the prefetcher copies as many experts
  as are expected to miss, a fraction ``a`` of them right; only the exposed part
  ``max(0, prefetch - previous layer time)`` and the ``(1 - a)`` on-demand misses cost time;
- the rest of the model (attention, embeddings, dense layers) as a memory-bound read of its
  weights and the KV cache: ``(non-expert bytes - input embedding + KV bytes) / (HBM bw x eff)``
  (moesim models MoE layers; attention FLOPs at decode are small next to this read).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from moesim.config import ConfigError, load_model, load_profile
from moesim.config.dtypes import bytes_per_element, weight_bytes
from moesim.core import expert_cache as core
from moesim.core.placement import contiguous
from moesim.inputs import inclusion_probs



@dataclass(frozen=True)
class NonExpertShape:
    vocab: int
    kv_dim: int | None = None  # key/value width (kv heads x head dim); None: = hidden (MHA)
    q_dim: int | None = None  # query/output width (heads x head dim); None: = hidden
    tied_embeddings: bool = False
    source: str = ""


KNOWN_SHAPES = {
    "mixtral-8x7b": NonExpertShape(32000, 1024, 4096, False,
                                   "mistralai/Mixtral-8x7B-v0.1 config.json: vocab_size 32000, "
                                   "num_attention_heads 32, num_key_value_heads 8, hidden 4096 "
                                   "(head_dim 128), tie_word_embeddings false"),
    "qwen3-30b-a3b": NonExpertShape(151936, 512, 4096, False,
                                    "Qwen/Qwen3-30B-A3B config.json: vocab_size 151936, "
                                    "num_attention_heads 32, num_key_value_heads 4, head_dim 128, "
                                    "tie_word_embeddings false"),
}
DEFAULT_SHAPE = NonExpertShape(32000, None, None, False,
                               "assumption: vocab 32000, multi-head attention (kv_dim = hidden), "
                               "untied embeddings")


def non_expert_params(model, shape: NonExpertShape) -> dict[str, float]:
    """Parameter counts of everything but the routed experts (see module docstring)."""
    h = model.hidden
    q_dim = shape.q_dim or h
    kv_dim = shape.kv_dim or h
    layers = model.moe_layers + model.dense_layers
    dense_ffn = model.matrices * h * (model.top_k + model.shared_experts) * model.expert_ffn
    return {
        "attention": layers * (2.0 * h * q_dim + 2.0 * h * kv_dim),
        "router_and_shared": model.moe_layers * (h * model.experts + model.shared_params()),
        "dense_ffn": model.dense_layers * float(dense_ffn),
        "norms": 2.0 * h * layers + h,
        "embeddings": shape.vocab * h * (1.0 if shape.tied_embeddings else 2.0),
    }


@dataclass(frozen=True)
class MemoryPlan:
    capacity_bytes: float
    non_expert_bytes: float
    kv_cache_bytes: float
    reserve_bytes: float
    expert_bytes: float  # one routed expert
    total_experts: int  # experts x moe_layers
    cache_experts: int

    @property
    def free_for_experts_bytes(self) -> float:
        return self.capacity_bytes - self.non_expert_bytes - self.kv_cache_bytes - self.reserve_bytes

    @property
    def fits_all(self) -> bool:
        return self.total_experts * self.expert_bytes <= self.free_for_experts_bytes

    @property
    def auto_cache(self) -> int:
        free = max(0.0, self.free_for_experts_bytes)
        return int(min(self.total_experts, math.floor(free / self.expert_bytes)))


def memory_plan(model, hw, *, batch: int = 1, context: int = 4096,
                reserve_bytes: float | None = None, shape: NonExpertShape | None = None,
                cache_experts: int | str = "auto") -> MemoryPlan:
    """Device memory split; ``cache_experts='auto'`` fills what is left with experts;
    ``reserve_bytes`` defaults to the profile's ``memory.reserved_bytes``."""
    shape = shape or KNOWN_SHAPES.get(model.name, DEFAULT_SHAPE)
    non_expert = sum(non_expert_params(model, shape).values())
    kv = (2.0 * (model.moe_layers + model.dense_layers) * (shape.kv_dim or model.hidden)
          * bytes_per_element(model.activation_dtype) * context * batch)
    plan = MemoryPlan(hw.memory.capacity_bytes,
                      float(weight_bytes(model.weight_dtype, non_expert)), kv,
                      float(hw.memory.reserved_bytes if reserve_bytes is None else reserve_bytes),
                      float(weight_bytes(model.weight_dtype, model.expert_params())),
                      model.experts * model.moe_layers, 0)
    cache = plan.auto_cache if cache_experts == "auto" else int(cache_experts)
    if not 0 <= cache <= plan.total_experts:
        raise ConfigError(f"cache_experts must be in [0, {plan.total_experts}] or 'auto', got "
                          f"{cache_experts}", field="cache_experts")
    return MemoryPlan(**{**plan.__dict__, "cache_experts": cache})


@dataclass
class OffloadResult:
    """One decode configuration. Times in seconds per decode step (all layers)."""

    model: str
    hardware: str
    batch: int
    policy: str
    cache_experts: int
    memory: MemoryPlan
    tokens_per_s: float
    step_time_s: float
    breakdown_s: dict[str, float]
    fetched_experts_per_step: float
    hit_rate: float
    settings: dict = field(default_factory=dict)

    def __str__(self) -> str:
        m = self.memory
        gb = 1e9
        lines = [
            (f"{self.model} on {self.hardware}: batch {self.batch}, {self.policy} cache of "
             f"{self.cache_experts} / {m.total_experts} experts "
             f"({self.cache_experts / max(1, m.total_experts) * 100:.1f}%)"),
            (f"memory: {m.capacity_bytes / gb:.2f} GB = non-expert {m.non_expert_bytes / gb:.2f}"
             f" + KV {m.kv_cache_bytes / gb:.2f} + reserve {m.reserve_bytes / gb:.2f} + experts "
             f"{self.cache_experts * m.expert_bytes / gb:.2f} (all experts: "
             f"{m.total_experts * m.expert_bytes / gb:.1f} GB; {m.expert_bytes / 1e6:.1f} MB "
             "each)"),
            (f"hit rate {self.hit_rate * 100:.1f}%, {self.fetched_experts_per_step:.2f} experts "
             f"fetched per step ({self.fetched_experts_per_step * m.expert_bytes / gb:.2f} GB)"),
        ]
        if self.cache_experts > m.auto_cache:
            lines.append(f"warning: {self.cache_experts} cached experts exceed device memory "
                         f"(room for {m.auto_cache})")
        for name, t in self.breakdown_s.items():
            lines.append(f"  {name:<20}{t * 1e3:>10.2f} ms")
        lines.append(f"decode step {self.step_time_s * 1e3:.2f} ms -> {self.tokens_per_s:.2f} "
                     "tokens/s")
        return "\n".join(lines)


def _layer_caches(total: int, layers: int) -> np.ndarray:
    """Per-layer cache sizes: ``total`` spread as evenly as possible."""
    return total // layers + (np.arange(layers) < total % layers)


def _trace_layers(trace: str) -> list[np.ndarray]:
    """Expert ids ``[tokens, top_k]`` per recorded layer: every layer of a ``moesim trace
    record`` .npz (unless ``@LAYER`` picks one), else the one table ``load_trace`` reads."""
    from moesim.traces.io import load_trace, read_trace, split_layer

    file, layer = split_layer(trace)
    if file.endswith(".npz") and layer is None:
        recorded = read_trace(file)
        return [recorded.ids[L].astype(np.int64) for L in recorded.layers]
    return [load_trace(trace)]


def _misses_per_layer(policy, q, caches, batch, layer_ids) -> tuple[np.ndarray, np.ndarray]:
    """(fetched, needed) distinct experts per step for each MoE layer: closed form from ``q``,
    or the trace of layer ``l % recorded layers`` replayed in steps of ``batch`` tokens."""
    out_f, out_n = np.zeros(caches.size), np.zeros(caches.size)
    if layer_ids is None:
        need = float(core.step_need(q, batch).sum())
        for c in np.unique(caches):
            out_f[caches == c], out_n[caches == c] = core.expected_misses(policy, q, int(c), batch), need
        return out_f, out_n
    memo: dict[tuple[int, int], tuple[float, float]] = {}
    for layer, c in enumerate(caches.tolist()):
        key = (layer % len(layer_ids), c)
        if key not in memo:
            ids = layer_ids[key[0]]
            steps = [ids[i:i + batch] for i in range(0, ids.shape[0] - batch + 1, batch)]
            memo[key] = core.simulate(steps, c, policy, q.size)
        out_f[layer], out_n[layer] = memo[key]
    return out_f, out_n


def predict_offload(model="mixtral-8x7b", hardware="rtx-4090", *, batch: int = 1,
                    cache_experts: int | str = "auto", policy: str = "lru",
                    routing: str = "uniform", trace: str | None = None,
                    prefetch_accuracy: float = 0.0, overlap: str = "sum", context: int = 4096,
                    host_efficiency: float | None = None,
                    host_bandwidth_bytes_per_s: float | None = None,
                    reserve_bytes: float | None = None, shape: NonExpertShape | None = None,
                    seed: int = 0, **model_overrides) -> OffloadResult:
    """Decode tokens/s with offloaded experts (see module docstring).

    ``trace``: a routing trace replayed through each layer's cache in steps of ``batch`` tokens:
    a ``moesim trace record`` .npz gives each recorded layer its own trace (model layer ``l``
    replays recorded layer ``l mod n``), ``FILE.npz@LAYER`` or any table
    ``moesim.traces.io.load_trace`` reads is replayed in every layer; without a trace, hit
    rates come in closed form from ``routing``. ``host_bandwidth_bytes_per_s`` overrides the
    profile's host link; ``model_overrides`` (``weight_dtype='fp8'`` ...) apply to the model.
    """
    from moesim import predict

    moe, hw = load_model(model, **model_overrides), load_profile(hardware)
    _check_options(hw, policy, overlap, prefetch_accuracy)
    if host_efficiency is None:  # a profile with a host link states it (validated on load)
        host_efficiency = float(hw.efficiency.host_link_bandwidth.at(1.0))
    shape = shape or KNOWN_SHAPES.get(moe.name, DEFAULT_SHAPE)
    plan = memory_plan(moe, hw, batch=batch, context=context, reserve_bytes=reserve_bytes,
                       shape=shape, cache_experts=cache_experts)
    layer_ids = _trace_layers(trace) if trace else None
    if layer_ids:
        pooled = np.concatenate(layer_ids)
        q = np.bincount(pooled.ravel(), minlength=moe.experts) / pooled.shape[0]
    else:
        q = inclusion_probs(routing, moe.experts, moe.top_k, seed)
    # an explicit placement with q: predict(q=...) alone cannot build a spec placement
    layer_s = predict(moe, hardware, batch, placement=contiguous(moe.experts, 1), q=q).time_s
    fetched, needed = _misses_per_layer(policy, q, _layer_caches(plan.cache_experts,
                                                                 moe.moe_layers), batch, layer_ids)
    bw = host_bandwidth_bytes_per_s or hw.host_link.bandwidth_bytes_per_s
    per_expert_s = core.fetch_time_s(1.0, plan.expert_bytes, bw, host_efficiency,
                                     hw.host_link.latency_s)
    breakdown = core.decode_step(layer_s, _rest_time_s(moe, hw, plan, shape), fetched,
                                 per_expert_s, prefetch_accuracy, overlap)
    step = sum(breakdown.values())
    return OffloadResult(
        moe.name, hw.name, batch, policy, plan.cache_experts, plan, batch / step, step, breakdown,
        float(fetched.sum()), 1.0 - float(fetched.sum()) / max(float(needed.sum()), 1e-12),
        {"routing": None if trace else routing, "trace": trace, "overlap": overlap,
         "prefetch_accuracy": prefetch_accuracy, "host_bandwidth_bytes_per_s": bw,
         "host_efficiency": host_efficiency, "context": context, "shape_source": shape.source})


def _check_options(hw, policy: str, overlap: str, prefetch_accuracy: float) -> None:
    if hw.host_link is None:
        raise ConfigError(f"hardware '{hw.name}' has no host_link", field="hardware")
    if overlap not in core.OVERLAP or not 0.0 <= prefetch_accuracy <= 1.0:
        raise ConfigError("overlap must be 'sum' or 'max' and prefetch_accuracy in [0, 1]",
                          field="overlap")
    if policy not in core.POLICIES:
        from moesim.config.errors import unknown

        raise ConfigError(unknown("cache policy", policy, core.POLICIES), field="policy")


def _rest_time_s(moe, hw, plan: MemoryPlan, shape: NonExpertShape) -> float:
    """Attention, embeddings and dense layers per step: a read of their weights (less the input
    embedding table, of which a step reads ``batch`` rows) and of the KV cache."""
    input_embedding = 0.0 if shape.tied_embeddings else \
        weight_bytes(moe.weight_dtype, shape.vocab * moe.hidden)
    return (plan.non_expert_bytes - input_embedding + plan.kv_cache_bytes) / (
        hw.memory.bandwidth_bytes_per_s * float(hw.efficiency.memory_bandwidth.at(1.0)))
