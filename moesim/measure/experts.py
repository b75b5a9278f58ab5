"""Expert FFNs: routed experts as one grouped GEMM (or a loop), shared experts as a dense FFN.

Layout: ``w_in [num_local, hidden, m * ffn]`` holds gate|up side by side for a gated (SwiGLU)
expert (m = 2) or the up matrix for a GELU expert (m = 1); ``w_out [num_local, ffn, hidden]``.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from moesim.config import MoEModel
from moesim.measure.weights import ROUTED_EXPERT, SHARED_EXPERT, frozen, seeded_normal

Gemm = Literal["auto", "grouped", "loop"]

_GROUPED_DTYPES = {"cpu": (torch.float32, torch.bfloat16, torch.float16),
                   "cuda": (torch.bfloat16,)}


def grouped_mm_supported(dtype: torch.dtype, device: torch.device, *dims: int) -> bool:
    """Whether ``torch._grouped_mm`` takes this dtype on this device with these row lengths.

    CPU (torch 2.13): fp32/bf16/fp16. CUDA: bf16 on SM >= 80, as documented for
    ``torch.nn.functional.grouped_mm``. Every row stride must be a multiple of 16 bytes.
    """
    if not hasattr(torch, "_grouped_mm") or dtype not in _GROUPED_DTYPES.get(device.type, ()):
        return False
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        return False
    align = 16 // torch.empty((), dtype=dtype).element_size()
    return all(d % align == 0 for d in dims)


def activate(h: torch.Tensor, gated: bool) -> torch.Tensor:
    """``[rows, m * ffn]`` -> ``[rows, ffn]``: silu(gate) * up, or gelu(up)."""
    if gated:
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return F.gelu(h)


def expert_matrices(model: MoEModel, ffn: int, seed: int, kind: int, index: int,
                    dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One expert's ``(w_in [hidden, m * ffn], w_out [ffn, hidden])``, seeded by its index."""
    w_in = seeded_normal((model.hidden, model.matrices - 1, ffn), model.hidden, seed, kind,
                         2 * index, dtype, device).reshape(model.hidden, -1)
    w_out = seeded_normal((ffn, model.hidden), ffn, seed, kind, 2 * index + 1, dtype, device)
    return w_in, w_out


class Experts(torch.nn.Module):
    """The routed experts ``expert_ids`` held on one device.

    ``forward(x_sorted [num_rows, hidden], counts [num_local])``: rows sorted by local expert,
    ``counts[i]`` rows for ``expert_ids[i]``; returns ``[num_rows, hidden]``.
    ``gemm``: "grouped" (``torch._grouped_mm``), "loop" (one matmul pair per non-empty expert),
    or "auto" (grouped where supported).
    """

    def __init__(self, model: MoEModel, expert_ids: list[int], *, dtype: torch.dtype,
                 device=None, seed: int = 0, gemm: Gemm = "auto"):
        super().__init__()
        if gemm not in ("auto", "grouped", "loop"):
            raise ValueError(f"gemm must be auto, grouped or loop, got {gemm!r}")
        self.gated = model.gated
        self.expert_ids = list(expert_ids)
        pairs = [expert_matrices(model, model.expert_ffn, seed, ROUTED_EXPERT, e, dtype, device)
                 for e in self.expert_ids]
        shape_in = (0, model.hidden, (model.matrices - 1) * model.expert_ffn)
        self.w_in = frozen(torch.stack([p[0] for p in pairs]) if pairs
                           else torch.empty(shape_in, dtype=dtype, device=device))
        self.w_out = frozen(torch.stack([p[1] for p in pairs]) if pairs
                            else torch.empty((0, model.expert_ffn, model.hidden), dtype=dtype,
                                             device=device))
        ok = grouped_mm_supported(dtype, self.w_in.device, model.hidden, model.expert_ffn)
        if gemm == "grouped" and not ok:
            raise ValueError(f"torch._grouped_mm does not support {dtype} on "
                             f"{self.w_in.device.type} with hidden={model.hidden}, "
                             f"expert_ffn={model.expert_ffn}")
        self.gemm = "grouped" if gemm == "grouped" or (gemm == "auto" and ok) else "loop"

    def forward(self, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        if self.gemm == "grouped" and len(self.expert_ids):
            offs = counts.cumsum(0).to(torch.int32)
            h = torch._grouped_mm(x_sorted, self.w_in, offs=offs)
            return torch._grouped_mm(activate(h, self.gated), self.w_out, offs=offs)
        out = x_sorted.new_empty(x_sorted.shape)
        start = 0
        for i, n in enumerate(counts.tolist()):
            if n:
                rows = x_sorted[start:start + n]
                out[start:start + n] = activate(rows @ self.w_in[i], self.gated) @ self.w_out[i]
            start += n
        return out


class SharedExperts(torch.nn.Module):
    """``shared_experts`` dense FFNs on every token, fused into one FFN of width
    ``shared_experts * shared_expert_ffn`` (exact: the activation is element-wise).

    ``w_in [hidden, m * S * ffn]`` is [all gates | all ups]; ``w_out [S * ffn, hidden]``.
    """

    def __init__(self, model: MoEModel, *, dtype: torch.dtype, device=None, seed: int = 0):
        super().__init__()
        self.gated, self.count = model.gated, model.shared_experts
        self.ffn = model.shared_expert_ffn
        pairs = [expert_matrices(model, self.ffn, seed, SHARED_EXPERT, j, dtype, device)
                 for j in range(self.count)]
        parts = [w.view(model.hidden, model.matrices - 1, self.ffn) for w, _ in pairs]
        fused = torch.cat(parts, dim=2).reshape(model.hidden, -1) if pairs else torch.empty(0)
        self.w_in = frozen(fused)
        self.w_out = frozen(torch.cat([w for _, w in pairs]) if pairs else torch.empty(0))

    def expert(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared expert ``j`` alone: ``(w_in [hidden, m * ffn], w_out [ffn, hidden])``."""
        width = self.count * self.ffn
        cols = [slice(g * width + j * self.ffn, g * width + (j + 1) * self.ffn)
                for g in range(self.w_in.shape[1] // width)]
        w_in = torch.cat([self.w_in[:, c] for c in cols], dim=1)
        return w_in, self.w_out[j * self.ffn:(j + 1) * self.ffn]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [num_tokens, hidden]`` -> ``[num_tokens, hidden]``."""
        return activate(x @ self.w_in, self.gated) @ self.w_out
