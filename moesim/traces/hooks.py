"""Forward hooks on the router (gate) modules of a ``transformers`` MoE model (needs torch).

Routers are found by module name: ``...(layers|blocks).<L>.(mlp|ffn|feed_forward|
block_sparse_moe).(gate|router)``, ``L`` the decoder-layer index. What a hook records depends on
what the module returns (nothing is re-run and no routing is reimplemented where the model
returns its choice):

* **returned indices**: the module's own top-k indices ``[num_tokens, num_topk]`` and the
  routing weights it returns (a dense ``[num_tokens, num_experts]`` score matrix is gathered at
  the indices) are stored as they are. transformers 5.x: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE,
  DeepSeek-V2/V3 and gpt-oss routers return ``(router_logits, weights, indices)``; 4.5x:
  DeepSeek-V2/V3, gpt-oss and DBRX routers return their indices.
* **router logits**: where the module returns only logits (5.x: DBRX, Llama 4; 4.5x: the
  ``nn.Linear`` gates of Mixtral, Qwen and OLMoE, Llama 4), the top-k is read from the logits
  the module produced with the family's own scoring, :func:`score_logits` (DBRX: its block's
  ``route_tokens_to_experts``). The metadata's ``capture`` says which path each layer took.

Checked on transformers 5.24 and 4.57 (tests/test_traces.py compares the recorded choice with
the tokens each MoE block hands to each expert).
"""
from __future__ import annotations

import re

import torch

ROUTER_NAME = re.compile(r"(?:^|\.)(?:layers|blocks)\.(\d+)\."
                         r"(?:mlp|ffn|feed_forward|block_sparse_moe)\.(?:gate|router)$")


def _softmax_topk(logits, k, renorm):
    probs = torch.softmax(logits.float(), dim=-1)
    weights, idx = torch.topk(probs, k, dim=-1)
    return (weights / weights.sum(dim=-1, keepdim=True) if renorm else weights), idx


def _group_mask(scores, groups, topk_groups, group_score):
    """Mask ``[num_tokens, num_experts]`` of the experts in each token's ``topk_groups`` groups."""
    grouped = scores.view(scores.shape[0], groups, -1)
    chosen = torch.topk(group_score(grouped), k=topk_groups, dim=-1, sorted=False)[1]
    mask = torch.zeros(grouped.shape[:2], dtype=torch.bool, device=scores.device)
    mask.scatter_(1, chosen, True)
    return mask.unsqueeze(-1).expand_as(grouped).reshape(scores.shape)


def _deepseek_v2(logits, k, config, module):
    scores = logits.float().softmax(dim=-1)
    if getattr(config, "topk_method", "greedy") == "group_limited_greedy":
        mask = _group_mask(scores, config.n_group, config.topk_group, lambda g: g.max(-1).values)
        scores = scores.masked_fill(~mask, 0.0)
    weights, idx = torch.topk(scores, k=k, dim=-1, sorted=False)
    return weights * config.routed_scaling_factor, idx


def _deepseek_v3(logits, k, config, module):
    scores = logits.float().sigmoid()
    bias = getattr(module, "e_score_correction_bias", None)
    choice = scores + bias if bias is not None else scores
    mask = _group_mask(choice, config.n_group, config.topk_group,
                       lambda g: g.topk(2, dim=-1)[0].sum(-1))
    idx = torch.topk(choice.masked_fill(~mask, float("-inf")), k=k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, idx)
    if getattr(config, "norm_topk_prob", True):
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * config.routed_scaling_factor, idx


def _topk_then(logits, k, activation):
    values, idx = torch.topk(logits, k, dim=-1)
    return activation(values.float()), idx


_SCORERS = {
    "mixtral": lambda x, k, c, m: _softmax_topk(x, k, True),
    "qwen2_moe": lambda x, k, c, m: _softmax_topk(x, k, bool(getattr(c, "norm_topk_prob", False))),
    "qwen3_moe": lambda x, k, c, m: _softmax_topk(x, k, bool(getattr(c, "norm_topk_prob", False))),
    "olmoe": lambda x, k, c, m: _softmax_topk(x, k, bool(getattr(c, "norm_topk_prob", False))),
    "gpt_oss": lambda x, k, c, m: _topk_then(x, k, lambda v: torch.softmax(v, dim=-1)),
    "llama4_text": lambda x, k, c, m: _topk_then(x, k, torch.sigmoid),
    "deepseek_v2": _deepseek_v2, "deepseek_v3": _deepseek_v3,
}


def score_logits(model_type: str, logits, top_k: int, config, module=None, block=None):
    """(weights, indices) ``[num_tokens, num_topk]`` from router logits ``[num_tokens, experts]``
    with the family's scoring: softmax then top-k (Mixtral renormalises, Qwen/OLMoE if
    ``norm_topk_prob``); gpt-oss top-k then softmax; Llama 4 top-k then sigmoid; DeepSeek-V2
    softmax, group-limited by the best expert per group; DeepSeek-V3 sigmoid plus the module's
    ``e_score_correction_bias``, groups by the sum of their top-2. A ``block`` with
    ``route_tokens_to_experts`` (DBRX) is asked directly."""
    if block is not None and hasattr(block, "route_tokens_to_experts"):
        weights, idx = block.route_tokens_to_experts(logits)
        return weights, idx
    if model_type not in _SCORERS:
        raise NotImplementedError(f"no router scoring known for model_type '{model_type}'; "
                                  f"known: {', '.join(sorted(_SCORERS))}")
    return _SCORERS[model_type](logits, top_k, config, module)


def choices(output, model_type: str, top_k: int, num_experts: int, config, module=None,
            block=None, force_logits: bool = False):
    """(ids, weights, how) from a router's forward output; ``how`` is 'returned' or 'logits'."""
    outs = list(output) if isinstance(output, (tuple, list)) else [output]
    tensors = [t for t in outs if torch.is_tensor(t)]
    ints = [t.reshape(-1, top_k) for t in tensors if not t.is_floating_point()
            and t.dim() >= 2 and t.shape[-1] == top_k]
    full = [t.reshape(-1, num_experts) for t in tensors if t.is_floating_point()
            and t.dim() >= 2 and t.shape[-1] == num_experts]
    if ints and not force_logits:
        idx = ints[0]
        same = [t.reshape(idx.shape) for t in tensors if t.is_floating_point()
                and t.numel() == idx.numel() and t.shape[-1] == top_k]
        if same:
            weights = same[0]
        elif full:
            weights = full[0].gather(1, idx)
        else:
            weights = torch.full(idx.shape, float("nan"))
        return idx, weights, "returned"
    if not full:
        raise RuntimeError(f"router output has no [num_tokens, {num_experts}] logits nor "
                           f"[num_tokens, {top_k}] indices: {[tuple(t.shape) for t in tensors]}")
    logits = full[-1] if model_type == "llama4_text" else full[0]  # Llama 4: (scores, logits)
    weights, idx = score_logits(model_type, logits, top_k, config, module, block)
    return idx, weights, "logits"


class RouterHooks:
    """Context manager: forward hooks on the routers of ``layers`` (all MoE layers if None)."""

    def __init__(self, model, model_type: str, top_k: int, num_experts: int, layers=None):
        self.routers = find_routers(model)
        self.layers = sorted(self.routers) if layers is None else list(layers)
        self.args = (model_type, top_k, num_experts, model.config)
        self.ids: dict[int, list] = {layer: [] for layer in self.layers}
        self.weights: dict[int, list] = {layer: [] for layer in self.layers}
        self.how: dict[int, str] = {}
        self._handles = []

    def __enter__(self):
        for layer in self.layers:
            module, block = self.routers[layer]
            self._handles.append(module.register_forward_hook(self._hook(layer, block)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, layer: int, block):
        def hook(module, inputs, output):
            idx, weights, how = choices(output, *self.args, module=module, block=block)
            self.ids[layer].append(idx.detach().to("cpu", torch.int64).reshape(-1, idx.shape[-1]))
            self.weights[layer].append(weights.detach().float().cpu().reshape(idx.shape))
            self.how[layer] = how
        return hook

    def tokens_seen(self) -> dict[int, int]:
        return {layer: sum(t.shape[0] for t in chunks) for layer, chunks in self.ids.items()}


def find_routers(model) -> dict[int, tuple]:
    """``{layer: (router module, its MoE block)}`` for every router found by ``ROUTER_NAME``."""
    found = {}
    for name, module in model.named_modules():
        match = ROUTER_NAME.search(name)
        if match:
            block = model.get_submodule(name.rsplit(".", 1)[0])
            found[int(match.group(1))] = (module, block)
    return found
