"""Per-token reference MoE (loops over tokens and their k experts); for tests only.

Routing is re-derived per token in plain Python (sorting scores), so it checks the vectorised
router as well as permute/grouped GEMM/unpermute. Shared experts are applied one by one.
"""
from __future__ import annotations

import torch

from moesim.measure.experts import activate
from moesim.measure.layers import MoELayer
from moesim.measure.weights import accumulate_dtype


def _route_token(scores: list[float], m) -> list[int]:
    """One token's top-k expert ids, group-limited when ``m.num_groups > 1``."""
    per_group = m.experts // m.num_groups
    allowed = range(m.experts)
    if m.num_groups > 1:
        group_score = [sum(sorted(scores[g * per_group:(g + 1) * per_group], reverse=True)[:2])
                       for g in range(m.num_groups)]
        groups = sorted(range(m.num_groups), key=lambda g: -group_score[g])[:m.topk_groups]
        allowed = [e for e in range(m.experts) if e // per_group in groups]
    return sorted(allowed, key=lambda e: -scores[e])[:m.top_k]


def naive_moe(layer: MoELayer, x: torch.Tensor, topk_idx=None) -> torch.Tensor:
    """``x [num_tokens, hidden]`` -> ``[num_tokens, hidden]`` with ``layer``'s weights.

    ``topk_idx [num_tokens, num_topk]``: forced ids (else the layer's router picks).
    """
    m, acc = layer.model, accumulate_dtype(x.dtype)
    out = torch.zeros(x.shape, dtype=acc)
    for t in range(x.shape[0]):
        logits = (x[t] @ layer.router.weight).to(acc)
        scores = torch.softmax(logits, 0) if m.router == "softmax" else torch.sigmoid(logits)
        ids = ([int(e) for e in topk_idx[t]] if topk_idx is not None
               else _route_token(scores.tolist(), m))
        weights = [scores[e] for e in ids]
        total = sum(weights) if layer.router.norm_topk else 1.0
        for e, w in zip(ids, weights):
            h = activate((x[t] @ layer.experts.w_in[e]).unsqueeze(0), m.gated)[0]
            out[t] += (w / total) * (h @ layer.experts.w_out[e]).to(acc)
    out = out.to(x.dtype)
    for j in range(m.shared_experts):
        w_in, w_out = layer.shared.expert(j)
        out = out + activate(x @ w_in, m.gated) @ w_out
    return out
