"""Streaming kernels and fixed costs: memory copy, per-op dispatch, router + top-k,
permute/unpermute, activation. Each mirrors what an eager torch MoE layer runs.

Byte counts follow the cost model (``moesim.core.layer``): a copy moves ``2 * size`` bytes
(read + write); ``params["bytes"]`` of the other kernels are the model's bytes for that phase.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from moesim.config.dtypes import bytes_per_element
from moesim.harness.microbench.common import Context, torch_dtype
from moesim.harness.records import Record
from moesim.harness.timing import rotation_count


def measure_copy(ctx: Context, size_bytes: int, dtype: str = "fp32") -> Record:
    """``dst.copy_(src)`` of ``size_bytes``; counts bytes read plus bytes written."""
    td = torch_dtype(dtype)
    numel = int(size_bytes // bytes_per_element(dtype))
    src = ctx.sets(ctx.randn(numel, dtype=td), 2)
    dst = [torch.empty_like(s) for s in src]
    stats = ctx.bench(lambda p: p[0].copy_(p[1]), list(zip(dst, src)))
    return Record("copy", {"dtype": dtype, "bytes": 2.0 * numel * bytes_per_element(dtype),
                           "size_bytes": numel * bytes_per_element(dtype)}, stats)


def _tiny_ops(ctx: Context) -> dict:
    """Ops of an MoE layer on inputs so small that only dispatch costs (one op each)."""
    a, b = ctx.randn(4, 4), ctx.randn(4, 4)
    idx = torch.tensor([0, 2], device=ctx.device)
    ids = torch.tensor([3, 1, 2, 0], device=ctx.device)
    return {
        "add": lambda: a + b, "mul": lambda: a * b, "matmul": lambda: a @ b,
        "silu": lambda: F.silu(a), "softmax": lambda: torch.softmax(a, -1),
        "topk": lambda: a.topk(2, dim=-1), "index_select": lambda: a.index_select(0, idx),
        "argsort": lambda: torch.argsort(ids, stable=True),
        "bincount": lambda: torch.bincount(ids, minlength=4),
        "index_add_": lambda: a.index_add_(0, idx, b[:2]),
    }


def measure_op_overhead(ctx: Context, ops_per_sample: int) -> list[Record]:
    """Seconds per op (a sample runs ``ops_per_sample`` ops back to back, then divides)."""
    out = []
    for name, op in _tiny_ops(ctx).items():
        def many(_, op=op):
            for _ in range(ops_per_sample):
                op()
        stats = ctx.bench(many, [None]).scaled(1.0 / ops_per_sample)
        out.append(Record("op_overhead", {"op": name, "ops_per_sample": ops_per_sample}, stats))
    return out


def router(x: torch.Tensor, w: torch.Tensor, top_k: int):
    """Router GEMM, softmax in fp32, top-k, normalised weights:
    ``x [num_tokens, hidden]`` -> ``topk_idx, topk_weights [num_tokens, num_topk]``."""
    scores = torch.softmax((x @ w).float(), dim=-1)
    topk_idx = scores.topk(top_k, dim=-1).indices
    weights = scores.gather(1, topk_idx)
    return topk_idx, weights / weights.sum(dim=-1, keepdim=True)


def permute(x: torch.Tensor, topk_idx: torch.Tensor, num_experts: int):
    """Sort (token, k) pairs by expert and gather their rows: ``x_sorted [pairs, hidden]``."""
    flat = topk_idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token_of = torch.div(order, topk_idx.shape[1], rounding_mode="floor")
    counts = torch.bincount(flat, minlength=num_experts)
    return x.index_select(0, token_of), order, token_of, counts


def unpermute(y_sorted: torch.Tensor, token_of: torch.Tensor, w_sorted: torch.Tensor,
              num_tokens: int) -> torch.Tensor:
    """Weighted scatter-add of expert outputs back to tokens, accumulated in fp32."""
    out = torch.zeros(num_tokens, y_sorted.shape[1], dtype=torch.float32, device=y_sorted.device)
    out.index_add_(0, token_of, y_sorted.float() * w_sorted.float().unsqueeze(1))
    return out.to(y_sorted.dtype)


def activation(h: torch.Tensor) -> torch.Tensor:
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


def measure_layer_ops(ctx: Context, dtype: str, tokens: int, hidden: int, ffn: int,
                      experts: int, top_k: int) -> list[Record]:
    """Router, permute, unpermute and activation at ``tokens`` tokens, uniform random routing."""
    td, a = torch_dtype(dtype), bytes_per_element(dtype)
    pairs = tokens * top_k
    count = rotation_count(pairs * hidden * a * 2, ctx.cache_bytes, max_sets=16)
    xs = ctx.sets(ctx.randn(tokens, hidden, dtype=td), count)
    wr = ctx.randn(hidden, experts, dtype=td)
    ids = [ctx.randint(experts, tokens, top_k) for _ in range(count)]
    ys = ctx.sets(ctx.randn(pairs, hidden, dtype=td), count)
    ws = [torch.rand(pairs, device=ctx.device) + 0.1 for _ in range(count)]
    toks = [permute(x, i, experts)[2] for x, i in zip(xs, ids)]
    hs = ctx.sets(ctx.randn(tokens, 2 * ffn, dtype=td), count)
    base = {"dtype": dtype, "tokens": tokens, "hidden": hidden, "experts": experts,
            "top_k": top_k}
    cases = [
        ("router", lambda x: router(x, wr, top_k), xs,
         {"bytes": tokens * experts * 4.0 * 2 + pairs * 8.0,
          "flops": 2.0 * tokens * hidden * experts}),
        ("permute", lambda p: permute(p[0], p[1], experts), list(zip(xs, ids)),
         {"bytes": 2.0 * pairs * hidden * a}),
        ("unpermute", lambda p: unpermute(p[0], p[1], p[2], tokens), list(zip(ys, toks, ws)),
         {"bytes": pairs * hidden * a + tokens * hidden * a}),
        ("activation", activation, hs, {"bytes": tokens * 3.0 * ffn * a}),
    ]
    out = []
    for kind, fn, inputs, extra in cases:
        params = {**base, **extra, "ffn": ffn} if kind == "activation" else {**base, **extra}
        out.append(Record(kind, params, ctx.bench(fn, inputs)))
    return out
