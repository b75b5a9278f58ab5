"""Self-attention cost of one layer on one device: projections, the attention core, KV cache.

Shapes per device (``H`` heads, ``G`` KV heads, ``d`` no-rope head dim, ``d_r`` rope dim, ``d_v``
value dim, ``t`` attention tensor-parallel size; heads split over ``t``, KV heads too but never
below one per device, so GQA/MQA replicate KV heads when ``t > G``):

* GQA/MHA/MQA: ``qkv [M, h] x [h, (H/t + 2 ceil(G/t)) d]``, ``o [M, (H/t) d_v] x [.., h]``.
* MLA (DeepSeek-V2/V3): ``q_a [h, r_q]`` (replicated), ``q_b [r_q, (H/t)(d + d_r)]``,
  ``kv_a [h, r_kv + d_r]`` (replicated), ``o [(H/t) d_v, h]``; prefill expands the latent with
  ``kv_b [r_kv, (H/t)(d + d_v)]`` over the new tokens and attends per head with
  ``d_qk = d + d_r``; decode runs the absorbed form (DeepSeek-V2 paper sec. 2.1.3, FlashMLA):
  ``q_nope`` is multiplied into the latent (``(H/t)`` batched ``[M, d] x [d, r_kv]``), attention
  runs over the cached latent with ``d_qk = r_kv + d_r`` and ``d_v = r_kv``, then
  ``(H/t)`` batched ``[M, r_kv] x [r_kv, d_v]``. Frameworks that do not absorb (Hugging Face
  ``transformers``' ``DeepseekV3Attention``: it caches the latent, then re-expands every cached
  token through ``kv_b`` at every step and attends per head) run decode in the prefill form plus
  that expansion (:func:`latent_expansion`, run field ``mla_decode: expand``).

The attention core over ``pairs`` (query, key) pairs per sequence does
``2 (H/t)(d_qk + d_v) pairs`` FLOPs and ``(H/t) pairs`` softmax exponentials and reads the KV
cache once (flash attention keeps the scores on chip)::

    compute = flops / (peak eff(M, N, K)) + exps / exp_rate
    time    = max(compute, bytes / (bw eff_mem)) + launches

``eff`` is the profile's GEMM efficiency at the flash-equivalent GEMM (:func:`flash_shape`):
all query rows on the device ``M = T H/t`` times a streamed ``[K, N]`` operand with ``K`` =
keys per query and ``N = d_qk + d_v`` (K and V side by side). It has the core's FLOPs and its
output tiles (query rows x head dims), and its reduction runs over the keys as the kernel's
KV loop does (FlashAttention-2, Dao 2023, arXiv:2307.08691, Algorithm 1), so short key ranges
pay the per-tile prologue/epilogue the GEMM grid measures at short K. Its operand is shared by
all rows, so where the real cache read (one per sequence and KV head) dominates, the memory
term does, not a memory-bound efficiency counted twice. The
exponentials run on the special-function units, not the tensor cores, and FlashAttention-2's
loop waits on them (FlashAttention-3, Shah et al. 2024, arXiv:2407.08608, sec. 3: H100 SXM5
does 989 TFLOPS of FP16 matmul but only 3.9 TFLOPS of special functions), so their time adds.

Keys per query with the causal mask (positions ``a = past + 1 .. b = past + new``):
full ``sum i``; sliding window W ``sum min(i, W)``; chunked (Llama 4) ``sum ((i-1) mod W) + 1``.
"""
from __future__ import annotations

import numpy as np


def _chunk_prefix(n: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum_{i=1..n} ((i-1) mod w) + 1``: q full chunks of w(w+1)/2 plus r(r+1)/2."""
    q, r = np.floor_divide(n, w), np.mod(n, w)
    return q * w * (w + 1) / 2 + r * (r + 1) / 2


def attended_keys(new, past, window, chunked) -> np.ndarray:
    """(query, key) pairs per sequence for ``new`` queries after ``past`` cached tokens
    ``[rows]``; ``window`` 0 = full attention; ``chunked`` bool ``[rows]``."""
    new, past, window = (np.asarray(x, dtype=float) for x in (new, past, window))
    a, b = past + 1.0, past + new
    full = (a + b) * new / 2.0
    w = np.where(window > 0, window, 1.0)
    lo_end = np.minimum(b, w)  # positions a..min(b, W) see i keys, later ones W
    ramp = np.where(lo_end >= a, (a + lo_end) * (lo_end - a + 1.0) / 2.0, 0.0)
    sliding = ramp + np.maximum(b - np.maximum(a - 1.0, w), 0.0) * w
    chunk = _chunk_prefix(b, w) - _chunk_prefix(a - 1.0, w)
    windowed = np.where(np.asarray(chunked, dtype=bool), chunk, sliding)
    return np.where(window > 0, windowed, full)


def cached_tokens(context, window) -> np.ndarray:
    """KV-cache entries one sequence keeps per layer: ``min(context, W)`` in window layers."""
    context, window = np.asarray(context, float), np.asarray(window, float)
    return np.where(window > 0, np.minimum(context, window), context)


def kv_elements_per_token(dims: dict, mla, tp) -> np.ndarray:
    """Cached elements per token per layer per device: ``2 ceil(G/t) d`` (K and V) or, for MLA,
    the latent plus rope key ``r_kv + d_r`` (one per token, replicated on every TP rank)."""
    kv_dev = np.ceil(dims["kv_heads"] / tp)
    return np.where(mla, dims["kv_lora"] + dims["rope"], 2.0 * kv_dev * dims["nope"])


def projection_gemms(dims: dict, hidden, tp, mla, decode) -> list[tuple]:
    """GEMMs of one attention block per device: ``(k, n, batch)`` each ``[rows]``; ``batch``
    is how many such GEMMs run (heads of a batched GEMM), 1 for plain projections."""
    h, heads = np.asarray(hidden, float), dims["heads"] / tp
    kv_dev = np.ceil(dims["kv_heads"] / tp)
    d, d_r, d_v, r_q, r_kv = dims["nope"], dims["rope"], dims["v"], dims["q_lora"], dims["kv_lora"]
    one = np.ones_like(h)
    zero = np.zeros_like(h)
    mla_q = r_q > 0
    # (k, n, batch) per GEMM; a GEMM with n == 0 costs nothing (masked out by the caller)
    return [
        (h, np.where(mla, np.where(mla_q, r_q, heads * (d + d_r)), (heads + 2 * kv_dev) * d), one),
        (np.where(mla & mla_q, r_q, one), np.where(mla & mla_q, heads * (d + d_r), zero), one),
        (h, np.where(mla, r_kv + d_r, zero), one),
        (np.where(mla, r_kv, one), np.where(mla & ~decode, heads * (d + d_v), zero), one),
        (np.where(mla, d, one), np.where(mla & decode, r_kv, zero), np.where(mla, heads, one)),
        (np.where(mla, r_kv, one), np.where(mla & decode, d_v, zero), np.where(mla, heads, one)),
        (heads * d_v, h, one),
    ]


def core_dims(dims: dict, mla, decode) -> tuple[np.ndarray, np.ndarray]:
    """(d_qk, d_v) of the attention core: MLA decode attends in the latent (absorbed)."""
    absorbed = mla & decode
    d_qk = np.where(absorbed, dims["kv_lora"] + dims["rope"], dims["nope"] + dims["rope"])
    return d_qk, np.where(absorbed, dims["kv_lora"], dims["v"])


def core_flops(dims: dict, mla, decode, tp, seqs, pairs) -> np.ndarray:
    """``2 (H/t)(d_qk + d_v) pairs`` per sequence, times the sequences on the device."""
    d_qk, d_v = core_dims(dims, mla, decode)
    return 2.0 * dims["heads"] / tp * (d_qk + d_v) * pairs * seqs


def core_rows(dims: dict, mla, decode, tp, new) -> np.ndarray:
    """Query rows one KV head (or the MLA latent) serves per sequence: the GEMM M the
    attention kernel sees, for its efficiency."""
    heads = dims["heads"] / tp
    per_kv = np.where(mla & decode, heads, dims["heads"] / np.maximum(dims["kv_heads"], 1.0))
    return np.maximum(new * per_kv, 1.0)


def flash_shape(dims: dict, mla, decode, tp, seqs, new, pairs) -> tuple:
    """(M, N, K) of the GEMM with the attention core's FLOPs and tiles ``[rows]``: ``M`` =
    every query row on the device ``seqs new H/t``, ``N = d_qk + d_v``, ``K = pairs / new``
    (mean keys per query), so ``2 M N K`` = :func:`core_flops`."""
    d_qk, d_v = core_dims(dims, mla, decode)
    new = np.asarray(new, dtype=float)
    keys = np.asarray(pairs, dtype=float) / np.maximum(new, 1.0)
    return np.maximum(seqs * new * dims["heads"] / tp, 1.0), d_qk + d_v, np.maximum(keys, 1.0)


#: FlashAttention-3's prefill tile, query rows x keys (Shah et al. 2024, arXiv:2407.08608,
#: sec. 4: 128 x 128 blocks for head dims 64 and 128)
FLASH_TILE = (128.0, 128.0)


def tiled_pairs(new, pairs, decode) -> np.ndarray:
    """(query, key) pairs per sequence and head a prefill kernel computes ``[rows]``: query
    rows padded to whole ``FLASH_TILE`` rows and each row's mean keys to whole key tiles,
    ``ceil(new/Bq) Bq ceil(pairs/(new Bk)) Bk``; decode rows are not padded (``pairs``)."""
    bq, bk = FLASH_TILE
    new, pairs = np.asarray(new, dtype=float), np.asarray(pairs, dtype=float)
    keys = pairs / np.maximum(new, 1.0)
    padded = np.ceil(new / bq) * bq * np.ceil(keys / bk - 1e-9) * bk
    return np.where(decode, pairs, np.maximum(padded, pairs))


def latent_expansion(dims: dict, tp, seqs, keys, new) -> tuple:
    """MLA decode without absorption (``mla_decode: expand``): every cached token's latent goes
    through ``kv_b`` again each step. Returns (GEMM ``M`` = ``seqs (keys - new)`` rows of
    ``[r_kv] x [r_kv, (H/t)(d + d_v)]`` (the new tokens' rows are in the projections), and
    the bytes per element size of the expanded K and V written and read back by the attention,
    ``2 seqs keys (H/t)(d + d_r + d_v)``)."""
    heads = dims["heads"] / tp
    rows = seqs * np.maximum(np.asarray(keys, float) - new, 0.0)
    expanded = 2.0 * seqs * np.asarray(keys, float) * heads * (dims["nope"] + dims["rope"]
                                                                + dims["v"])
    return rows, expanded


def softmax_exps(dims: dict, tp, seqs, pairs) -> np.ndarray:
    """Exponentials of the online softmax: one per (query, key, head), ``(H/t) pairs seqs``."""
    return dims["heads"] / tp * np.asarray(pairs, dtype=float) * seqs
