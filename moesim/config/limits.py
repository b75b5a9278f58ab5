"""Upper bounds on every size moesim accepts, each set by what a real model, run or file can be.

A typo (``experts: 1000000000``, ``tokens: 4611686018427387904``, ``routing: trace:/dev/zero``)
must be refused with a message naming the limit, not turned into a 24 GB allocation or a
prediction of 1e12 seconds. Each bound leaves headroom over the largest real case it cites;
raise one here (and only here) when a real model outgrows it.
"""
from __future__ import annotations

#: Routed experts per MoE layer. Largest real: Switch-C 2048 (Fedus et al. 2021, arXiv
#: 2101.03961), DeepSeek-V3 256, Qwen3-235B 128. 8x Switch-C. (Product-key "million expert"
#: layers (PEER, arXiv 2407.04202) use single-neuron experts, outside this per-expert GEMM model.)
MAX_EXPERTS = 16_384
#: (``top_k`` needs no limit of its own: it is at most ``experts``.)
#: Shared (always active) experts: DeepSeek-V2/V3 1-2, Qwen2-MoE 1 of 4x size; 16x headroom.
MAX_SHARED_EXPERTS = 64
#: Model width. Largest real: 18432 (PaLM-540B), 16384 (Llama-3.1-405B), 7168 (DeepSeek-V3).
MAX_HIDDEN = 131_072
#: Intermediate size of one expert (or shared expert). Largest real dense FFN: 73728 (PaLM-540B);
#: expert FFNs are smaller (Mixtral 14336, DeepSeek-V3 2048).
MAX_FFN = 262_144
#: Decoder layers of each kind. Largest real: 126 (Llama-3.1-405B), 118 (PaLM), 61 (DeepSeek-V3).
MAX_LAYERS = 1_024
#: Tokens per device entering the layer. Largest sensible: a 1M-token prefill on one device
#: (Llama-4 Scout's 10M context is served chunked); 64x headroom over 1M.
MAX_TOKENS = 1 << 26
#: Expert-parallel devices. Largest real: DeepSeek-V3 decode on 320 GPUs (EP320); GB200 NVL72
#: racks joined to a few thousand. One device per expert slot at most in any case.
MAX_EP = 16_384
#: Whole-model architecture. Vocabulary: largest real 262,144 (Gemma 3), 256,000 (Gemma 2),
#: 202,048 (Llama 4); 16x headroom. Attention heads: 128 (DeepSeek-V3, Llama-3.1-405B);
#: head dims: 128-256 (gpt-oss 64, Gemma 256); MLA latent ranks 512 / 1536 (DeepSeek-V3).
MAX_VOCAB = 1 << 22
MAX_HEADS = 4_096
MAX_HEAD_DIM = 16_384
#: Tokens in one sequence (prompt, KV cache, attention window): Llama 4 Scout's 10M context;
#: the same 2^26 as MAX_TOKENS.
MAX_SEQUENCE = MAX_TOKENS
#: Sequences in flight over a deployment: vLLM/SGLang cap running requests at a few thousand
#: per instance; 2^24 covers a thousand instances at 16k each.
MAX_BATCH = 1 << 24
#: Devices along one parallel dimension (TP, DP-attention, PP, expert TP): as MAX_EP.
MAX_PARALLEL = MAX_EP
#: Redundant expert slots of ``replicated:R`` (EPLB uses 32 for 256 experts): one per expert.
MAX_REDUNDANT_SLOTS = MAX_EXPERTS
#: Routing seed: numpy int64 columns carry it through predict_many.
MAX_SEED = (1 << 63) - 1
#: Zipf exponent / log-normal sigma of a routing spec. Fitted to real traces they are below 3;
#: at 20 the hottest expert already takes > 99.9999 % of a Zipf's mass, and beyond ~700 the
#: shares underflow to 0 in float64 (which would turn q into NaN).
MAX_ROUTING_SKEW = 20.0
#: A capacity factor above experts / top_k never drops; 1024 is beyond every real model's.
MAX_CAPACITY_FACTOR = 1_024.0
#: Characters of a routing spec: a ``probs:`` list of MAX_EXPERTS values at ~24 chars each.
MAX_ROUTING_SPEC_CHARS = 32 * MAX_EXPERTS

#: YAML/JSON inputs a person writes (scenarios, profiles, models, HF config.json, placements):
#: the largest shipped file is ~10 KB, a placement of MAX_EXPERTS experts ~100 KB.
MAX_CONFIG_FILE_BYTES = 16 << 20
#: Values of a YAML document once its aliases are expanded: the largest shipped file has ~500;
#: a sweep list of 1e6 explicit values is a 10 MB file. Stops "billion laughs" alias bombs.
MAX_YAML_NODES = 2_000_000
#: Nesting depth of a YAML/JSON input: shipped files nest 5 deep.
MAX_NESTING = 64
#: Routing trace files (``.npy``/``.npz`` ids), counted as decoded int64 (what routing loads):
#: 64M ids, e.g. 8M tokens x top-8; statistics need ~1e6 tokens, and ``moesim trace record`` of
#: 61 layers x 8192 tokens x top-8 is 4M ids. Text traces parse at ~8x their size in memory.
MAX_TRACE_BYTES = 512 << 20
MAX_TEXT_TRACE_BYTES = 64 << 20

#: Rows of a scenario's grid (a typo'd range should not fill the disk).
MAX_SWEEP_POINTS = 5_000_000
#: Cells (rows x expert slots) of one predict_many call. Measured: ~50 bytes per cell at peak
#: (2000 rows x 8192 experts, two-batch overlap: 790 MB), so 2e7 cells stay near 1 GB;
#: ``moesim run`` sizes its chunks to fit.
MAX_PREDICT_CELLS = 20_000_000

#: Hardware profile ranges. Bandwidths: 1 kB/s to 1 PB/s (HBM3e: 8e12 B/s, NVL72 switch
#: 1.8e12); peaks: 1e6 to 1e19 FLOP/s (B200 dense FP4: 9e15); capacities: 1 MB to 1 PB;
#: latencies and launch overheads: at most 1 s. Outside them a time overflows or means nothing.
BANDWIDTH_RANGE_BYTES_PER_S = (1e3, 1e15)
PEAK_FLOPS_RANGE = (1e6, 1e19)
CAPACITY_RANGE_BYTES = (1e6, 1e15)
MAX_LATENCY_S = 1.0
MAX_COMPUTE_UNITS = 1_000_000
MAX_GEMM_TILE = 65_536
MAX_DOMAIN_SIZE = 1_000_000


#: Integer fields of models and runs -> (limit, its name here), checked by their validators.
FIELD_LIMITS = {
    "experts": (MAX_EXPERTS, "MAX_EXPERTS"), "num_groups": (MAX_EXPERTS, "MAX_EXPERTS"),
    "topk_groups": (MAX_EXPERTS, "MAX_EXPERTS"), "top_k": (MAX_EXPERTS, "MAX_EXPERTS"),
    "shared_experts": (MAX_SHARED_EXPERTS, "MAX_SHARED_EXPERTS"),
    "hidden": (MAX_HIDDEN, "MAX_HIDDEN"), "expert_ffn": (MAX_FFN, "MAX_FFN"),
    "shared_expert_ffn": (MAX_FFN, "MAX_FFN"), "moe_layers": (MAX_LAYERS, "MAX_LAYERS"),
    "dense_layers": (MAX_LAYERS, "MAX_LAYERS"), "tokens": (MAX_TOKENS, "MAX_TOKENS"),
    "ep": (MAX_EP, "MAX_EP"), "seed": (MAX_SEED, "MAX_SEED"),
    "capacity_factor": (MAX_CAPACITY_FACTOR, "MAX_CAPACITY_FACTOR"),
    "vocab": (MAX_VOCAB, "MAX_VOCAB"), "heads": (MAX_HEADS, "MAX_HEADS"),
    "kv_heads": (MAX_HEADS, "MAX_HEADS"), "head_dim": (MAX_HEAD_DIM, "MAX_HEAD_DIM"),
    "qk_rope_head_dim": (MAX_HEAD_DIM, "MAX_HEAD_DIM"), "v_head_dim": (MAX_HEAD_DIM, "MAX_HEAD_DIM"),
    "q_lora_rank": (MAX_HIDDEN, "MAX_HIDDEN"), "kv_lora_rank": (MAX_HIDDEN, "MAX_HIDDEN"),
    "sliding_window": (MAX_SEQUENCE, "MAX_SEQUENCE"), "window_layers": (MAX_LAYERS, "MAX_LAYERS"),
    "cross_attention_layers": (MAX_LAYERS, "MAX_LAYERS"), "dense_ffn": (MAX_FFN, "MAX_FFN"),
    "batch": (MAX_BATCH, "MAX_BATCH"), "prompt_len": (MAX_SEQUENCE, "MAX_SEQUENCE"),
    "context": (MAX_SEQUENCE, "MAX_SEQUENCE"), "tp": (MAX_PARALLEL, "MAX_PARALLEL"),
    "dp_attn": (MAX_PARALLEL, "MAX_PARALLEL"), "pp": (MAX_PARALLEL, "MAX_PARALLEL"),
    "moe_tp": (MAX_PARALLEL, "MAX_PARALLEL"),
}


def not_bool(value, field: str):
    """Pydantic takes ``true`` for 1: refuse it for a number (a pydantic before-validator)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a true/false value")
    return value


def bounded(value, field: str):
    """``value`` if within FIELD_LIMITS[field], else a ValueError naming the limit."""
    limit, name = FIELD_LIMITS[field]
    if value > limit:
        raise ValueError(limit_error(field, value, limit, name))
    return value


def _show(value) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else f"{value}"


def limit_error(what: str, value, limit, name: str) -> str:
    """The message for a value beyond a limit: what, the value, the limit and where it is set."""
    return (f"{what} {_show(value)} exceeds the limit of {_show(limit)} "
            f"(moesim.config.limits.{name}: beyond any real model or run)")
