"""Single-device reference MoE layer in torch, instrumented by phase.

router -> permute (sort (token, k) pairs by expert) -> experts (grouped GEMM) -> unpermute
(weighted scatter-add back to tokens) -> shared experts. No dispatch/combine on one device.
"""
from __future__ import annotations

import copy

import torch

from moesim.config import MoEModel
from moesim.measure.experts import Experts, Gemm, SharedExperts
from moesim.measure.router import Router, Routing, forced_ids
from moesim.harness.timing import NULL_TIMER
from moesim.measure.weights import accumulate_dtype, torch_dtype


def permute(topk_idx: torch.Tensor, num_experts: int):
    """Sort the ``num_tokens * num_topk`` (token, k) pairs by expert.

    ``topk_idx [num_tokens, num_topk]`` -> ``(order [num_tokens * num_topk]`` pair positions in
    expert order, ``token_of [num_tokens * num_topk]`` token of each sorted pair,
    ``counts [num_experts]`` pairs per expert).
    """
    flat = topk_idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token_of = torch.div(order, topk_idx.shape[1], rounding_mode="floor")
    return order, token_of, torch.bincount(flat, minlength=num_experts)


def unpermute(y_sorted: torch.Tensor, token_of: torch.Tensor, weights_sorted: torch.Tensor,
              num_tokens: int) -> torch.Tensor:
    """Weighted sum of expert outputs per token, accumulated in fp32 (float64 stays float64).

    ``y_sorted [num_pairs, hidden]``, ``token_of``/``weights_sorted [num_pairs]``
    -> ``[num_tokens, hidden]`` in ``y_sorted.dtype``.
    """
    acc = accumulate_dtype(y_sorted.dtype)
    out = torch.zeros(num_tokens, y_sorted.shape[1], dtype=acc, device=y_sorted.device)
    out.index_add_(0, token_of, y_sorted.to(acc) * weights_sorted.to(acc).unsqueeze(1))
    return out.to(y_sorted.dtype)


class MoELayer(torch.nn.Module):
    """One MoE layer on one device: all ``num_experts`` experts local.

    ``dtype`` defaults to ``model.activation_dtype``; weights are seeded per matrix (see
    ``moesim.measure.weights``) so ``EPMoELayer`` ranks hold identical experts.
    ``routing``: forced ``topk_idx [num_tokens, num_topk]`` (array, or a function of
    ``num_tokens``); ``forward(topk_idx=...)`` overrides it for one call.
    After a forward, ``last_tokens_per_expert [num_experts]`` holds the (token, k) pairs per expert.
    """

    def __init__(self, model: MoEModel, *, dtype: str | torch.dtype | None = None, device=None,
                 seed: int = 0, routing: Routing | None = None, norm_topk: bool = True,
                 gemm: Gemm = "auto"):
        super().__init__()
        self.model = model
        self.dtype = torch_dtype(dtype if dtype is not None else model.activation_dtype)
        self.routing = routing
        kw = dict(dtype=self.dtype, device=device, seed=seed)
        self.router = Router(model, norm_topk=norm_topk, **kw)
        self.experts = Experts(model, list(range(model.experts)), gemm=gemm, **kw)
        self.shared = SharedExperts(model, **kw) if model.shared_experts else None
        self.last_tokens_per_expert: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, timer=NULL_TIMER,
                topk_idx: Routing | None = None) -> torch.Tensor:
        """``x [num_tokens, hidden]`` -> ``[num_tokens, hidden]``; phases reported to ``timer``."""
        num_tokens, m = x.shape[0], self.model
        forced = forced_ids(topk_idx if topk_idx is not None else self.routing, num_tokens,
                            m.top_k, m.experts, x.device)
        with timer.phase("router"):
            topk_idx, topk_weights = self.router(x, forced)
        with timer.phase("permute"):
            order, token_of, counts = permute(topk_idx, m.experts)
            x_sorted = x.index_select(0, token_of)
        with timer.phase("experts"):
            y_sorted = self.experts(x_sorted, counts)
        with timer.phase("unpermute"):
            out = unpermute(y_sorted, token_of, topk_weights.reshape(-1)[order], num_tokens)
        if self.shared is not None:
            with timer.phase("shared_experts"):
                out = out + self.shared(x)
        self.last_tokens_per_expert = counts
        return out


def layer_copies(layer, cache_bytes: int, limit: int = 64) -> list:
    """``layer`` and deep copies of it, enough that their weights exceed ``cache_bytes``."""
    nbytes = sum(p.numel() * p.element_size() for p in layer.parameters())
    count = int(min(limit, max(1, -(-int(cache_bytes) // max(1, nbytes)))))
    return [layer] + [copy.deepcopy(layer) for _ in range(count - 1)]
