"""The router: GEMM, score function, (group-limited) top-k, and forced expert ids."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from moesim.config import MoEModel
from moesim.measure.forced import check_topk_ids
from moesim.measure.weights import ROUTER, accumulate_dtype, frozen, seeded_normal

#: Forced routing: ``topk_idx [num_tokens, num_topk]`` or a function of ``num_tokens`` giving it.
Routing = np.ndarray | torch.Tensor | Callable[[int], np.ndarray]


def score(logits: torch.Tensor, router: str) -> torch.Tensor:
    """``[num_tokens, num_experts]`` scores: softmax over experts, or an element-wise sigmoid."""
    if router == "softmax":
        return torch.softmax(logits, dim=-1)
    if router == "sigmoid":
        return torch.sigmoid(logits)
    raise ValueError(f"unknown router {router!r}")


def group_mask(scores: torch.Tensor, num_groups: int, topk_groups: int) -> torch.Tensor:
    """``[num_tokens, num_experts]`` bool: experts in each token's ``topk_groups`` best groups.

    A group's score is the sum of its two best expert scores (DeepSeek-V3), or its only score
    when a group holds one expert.
    """
    num_tokens, num_experts = scores.shape
    grouped = scores.view(num_tokens, num_groups, num_experts // num_groups)
    group_score = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(-1)
    best = group_score.topk(topk_groups, dim=-1).indices
    keep = torch.zeros(num_tokens, num_groups, dtype=torch.bool, device=scores.device)
    keep.scatter_(1, best, True)
    return keep.repeat_interleave(num_experts // num_groups, dim=1)


def select_topk(scores: torch.Tensor, top_k: int, num_groups: int = 1,
                topk_groups: int = 1) -> torch.Tensor:
    """``topk_idx [num_tokens, num_topk]`` (int64), group-limited when ``num_groups > 1``."""
    if num_groups > 1:
        allowed = group_mask(scores, num_groups, topk_groups)
        scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.topk(top_k, dim=-1).indices


class Router(torch.nn.Module):
    """Router GEMM ``[hidden, num_experts]`` -> scores -> top-k -> ``topk_weights``.

    With forced routing the GEMM and score function still run; only the ids are replaced, and
    the weights are the scores gathered at the forced ids. ``norm_topk``: weights divided by
    their sum over the chosen k (DeepSeek-V3 sigmoid, Mixtral softmax); otherwise raw scores.
    """

    def __init__(self, model: MoEModel, *, dtype: torch.dtype, device=None, seed: int = 0,
                 norm_topk: bool = True):
        super().__init__()
        self.model = model
        self.norm_topk = norm_topk
        self.weight = frozen(seeded_normal((model.hidden, model.experts), model.hidden, seed,
                                           ROUTER, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, topk_idx: torch.Tensor | None = None):
        """``x [num_tokens, hidden]`` -> ``(topk_idx [num_tokens, num_topk] int64,
        topk_weights [num_tokens, num_topk])`` with weights in the accumulation dtype."""
        m = self.model
        scores = score((x @ self.weight).to(accumulate_dtype(x.dtype)), m.router)
        if topk_idx is None:
            topk_idx = select_topk(scores, m.top_k, m.num_groups, m.topk_groups)
        weights = scores.gather(1, topk_idx)
        if self.norm_topk:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return topk_idx, weights


def forced_ids(routing: Routing | None, num_tokens: int, top_k: int, experts: int,
               device) -> torch.Tensor | None:
    """Forced ``topk_idx [num_tokens, num_topk]`` on ``device`` (validated), or None."""
    if routing is None:
        return None
    ids = routing(num_tokens) if callable(routing) else routing
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = check_topk_ids(ids, num_tokens, top_k, experts)
    return torch.as_tensor(ids, dtype=torch.int64, device=device)
