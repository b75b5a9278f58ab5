"""Expert-parallel MoE layer over ``torch.distributed`` (gloo on CPU, nccl on CUDA).

Each rank routes its own tokens, sends one row per (token, chosen expert) to the rank holding
that expert ("per-expert" kernel family: no de-duplication of a token sent to two experts on one
rank), runs its local experts, and gets the results back:

router -> permute (sort pairs by destination rank and slot) -> dispatch (counts, then rows, via
``all_to_all_single`` with uneven splits) -> permute (received rows by local expert) -> experts
-> unpermute -> combine (rows back) -> unpermute (weighted sum per token) -> shared experts.
With one rank no process group is needed and the exchanges are identities.

``overlap="shared"`` issues the rows of the dispatch asynchronously (``async_op=True``) and
computes the shared experts while they are in flight, as DeepSeek-V3 serving stacks hide the
shared expert under the dispatch; the shared output is added after the combine. (The count
exchange before it stays blocking: the receive splits depend on it.)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from moesim.config import MoEModel
from moesim.measure.experts import Experts, Gemm, SharedExperts
from moesim.measure.layers import unpermute
from moesim.measure.placement import ReplicaTable
from moesim.measure.router import Router, Routing, forced_ids
from moesim.harness.timing import NULL_TIMER
from moesim.measure.weights import torch_dtype


@dataclass
class EPStats:
    """One forward pass on one rank. Bytes and rows count only traffic to/from other ranks."""

    rank: int
    num_ranks: int
    rows_local: int                # pairs this rank routes to its own experts
    dispatch_rows_sent: int
    dispatch_rows_recv: int
    dispatch_bytes_sent: int
    dispatch_bytes_recv: int
    combine_bytes_sent: int
    combine_bytes_recv: int
    count_bytes_sent: int          # the per-(rank, slot) count exchange before dispatch
    tokens_per_local_expert: list[int]

    def as_dict(self) -> dict:
        return asdict(self)


OVERLAPS = ("none", "shared")


class _Done:
    """The handle of an exchange that needed no communication (one rank)."""

    def wait(self) -> None:
        return None


def _exchange(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group,
              num_ranks: int, async_op: bool = False):
    """``all_to_all_single`` of rows ``x [sum(in_splits), ...]`` -> ``[sum(out_splits), ...]``;
    with ``async_op`` returns ``(out, handle)`` and the rows are valid after ``handle.wait()``."""
    if num_ranks == 1:
        return (x, _Done()) if async_op else x
    out = x.new_empty((sum(out_splits),) + tuple(x.shape[1:]))
    work = dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group,
                                  async_op=async_op)
    return (out, work) if async_op else out


@dataclass
class _Stage:
    """One micro-batch's state between the stages of ``EPMoELayer``."""

    x: torch.Tensor
    shared_out: torch.Tensor | None = None
    topk_weights: torch.Tensor | None = None
    order: torch.Tensor | None = None
    token_of: torch.Tensor | None = None
    send_counts: torch.Tensor | None = None
    send_x: torch.Tensor | None = None
    recv_counts: torch.Tensor | None = None
    send_splits: list | None = None
    recv_splits: list | None = None
    recv_x: torch.Tensor | None = None
    counts_local: torch.Tensor | None = None
    y_recv: torch.Tensor | None = None
    y_send: torch.Tensor | None = None
    pending: object = None


def two_batch_stack(layers: list, x: torch.Tensor, timer=NULL_TIMER,
                    topk_idx: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` through consecutive ``EPMoELayer`` s as two micro-batches that interleave, as in
    two-batch overlap (SGLang; DeepSeek-V3's dual micro-batch): per layer the compute runs
    front(0), back(1 of the previous layer), front(1), experts(0), experts(1), back(0), while
    dispatch(0) is in flight under back/front of the other micro-batch, dispatch(1) under
    experts(0), combine(0) under experts(1) and combine(1) under back(0) and the next layer's
    front(0). ``topk_idx`` (forced ids of all tokens) is split with the tokens. Collective.

    The count exchange before each dispatch blocks and, on one process group, starts only after
    the collectives already in flight there (gloo and NCCL both order a group's collectives), so
    dispatch(1)'s counts wait for dispatch(0)'s rows; a fused GPU dispatch kernel (DeepEP) sends
    counts with the rows and does not pay that."""
    half = (x.shape[0] + 1) // 2
    xs = [x[:half], x[half:]]
    ids = [None, None] if topk_idx is None else [topk_idx[:half], topk_idx[half:]]
    carry = None
    for layer in layers:
        s0 = layer.front(xs[0], timer, ids[0])
        layer.dispatch_begin(s0, timer)
        if carry is not None:
            xs[1] = carry[0].back(carry[1], timer)
        s1 = layer.front(xs[1], timer, ids[1])
        layer.dispatch_begin(s1, timer)
        layer.middle(s0, timer)
        layer.middle(s1, timer)
        xs[0] = layer.back(s0, timer)
        carry = (layer, s1)
    xs[1] = carry[0].back(carry[1], timer)
    return torch.cat(xs)


class EPMoELayer(torch.nn.Module):
    """The experts ``placement[rank]`` of one MoE layer, plus a replicated router and shared
    experts; weights equal ``MoELayer(model, seed=seed)``'s.

    ``placement [num_ranks][...]``: expert ids per rank (see ``moesim.measure.placement``).
    ``forward(x [num_tokens, hidden])`` is collective: every rank of ``group`` calls it.
    ``last_stats`` holds the ``EPStats`` of the latest forward.
    """

    def __init__(self, model: MoEModel, placement: list[list[int]], *, rank: int | None = None,
                 group=None, dtype: str | torch.dtype | None = None, device=None, seed: int = 0,
                 routing: Routing | None = None, norm_topk: bool = True, gemm: Gemm = "auto",
                 overlap: str = "none"):
        super().__init__()
        if overlap not in OVERLAPS:
            raise ValueError(f"overlap must be one of {', '.join(OVERLAPS)}, got {overlap!r}")
        self.overlap = overlap
        self.model, self.group, self.routing = model, group, routing
        self.dtype = torch_dtype(dtype if dtype is not None else model.activation_dtype)
        self.table = ReplicaTable(placement, model.experts, device=device)
        self.num_ranks = self.table.num_ranks
        initialised = dist.is_available() and dist.is_initialized()
        if initialised and dist.get_world_size(group) != self.num_ranks:
            raise ValueError(f"placement has {self.num_ranks} ranks, the process group "
                             f"{dist.get_world_size(group)}")
        if not initialised and self.num_ranks > 1:
            raise ValueError(f"{self.num_ranks} ranks need an initialised process group")
        self.rank = rank if rank is not None else (dist.get_rank(group) if initialised else 0)
        kw = dict(dtype=self.dtype, device=device, seed=seed)
        self.router = Router(model, norm_topk=norm_topk, **kw)
        self.experts = Experts(model, self.table.placement[self.rank], gemm=gemm, **kw)
        self.shared = SharedExperts(model, **kw) if model.shared_experts else None
        self.last_stats: EPStats | None = None

    def forward(self, x: torch.Tensor, timer=NULL_TIMER,
                topk_idx: Routing | None = None) -> torch.Tensor:
        """``x [num_tokens, hidden]`` (this rank's tokens) -> ``[num_tokens, hidden]``."""
        st = self.front(x, timer, topk_idx)
        hide_shared = self.overlap == "shared" and self.shared is not None
        self.dispatch_begin(st, timer, wait=not hide_shared)
        if hide_shared:
            with timer.phase("shared_experts"):
                st.shared_out = self.shared(x)
        self.middle(st, timer, combine_wait=True)
        return self.back(st, timer)

    # the forward in stages, so that micro-batches can interleave (``two_batch_stack``)

    def front(self, x: torch.Tensor, timer=NULL_TIMER, topk_idx: Routing | None = None):
        """Router and permute of ``x``: the stage state for :meth:`dispatch_begin`."""
        m = self.model
        forced = forced_ids(topk_idx if topk_idx is not None else self.routing, x.shape[0],
                            m.top_k, m.experts, x.device)
        st = _Stage(x=x)
        with timer.phase("router"):
            topk_idx, st.topk_weights = self.router(x, forced)
        with timer.phase("permute"):
            st.order, st.token_of, st.send_counts = self._send_order(topk_idx)
            st.send_x = x.index_select(0, st.token_of)
        return st

    def dispatch_begin(self, st, timer=NULL_TIMER, wait: bool = False) -> None:
        """Count exchange (blocking: the splits depend on it), then the rows, asynchronously."""
        ranks, slots = self.num_ranks, self.table.max_local
        with timer.phase("dispatch"):
            st.recv_counts = _exchange(st.send_counts, [slots] * ranks, [slots] * ranks,
                                       self.group, ranks).view(ranks, slots)
            st.send_splits = st.send_counts.view(ranks, slots).sum(1).tolist()
            st.recv_splits = st.recv_counts.sum(1).tolist()
            st.recv_x, st.pending = _exchange(st.send_x, st.recv_splits, st.send_splits,
                                              self.group, ranks, async_op=True)
            if wait:
                st.pending.wait()

    def middle(self, st, timer=NULL_TIMER, combine_wait: bool = False) -> None:
        """Wait for the dispatch, run the local experts, start the combine."""
        ranks = self.num_ranks
        with timer.phase("dispatch"):
            st.pending.wait()
        with timer.phase("permute"):
            local_order = self._local_order(st.recv_counts)
            x_local = st.recv_x.index_select(0, local_order)
            st.counts_local = st.recv_counts.sum(0)[:len(self.experts.expert_ids)]
        with timer.phase("experts"):
            y_local = self.experts(x_local, st.counts_local)
        with timer.phase("unpermute"):
            st.y_recv = torch.empty_like(y_local).index_copy_(0, local_order, y_local)
        with timer.phase("combine"):
            st.y_send, st.pending = _exchange(st.y_recv, st.send_splits, st.recv_splits,
                                              self.group, ranks, async_op=True)
            if combine_wait:
                st.pending.wait()

    def back(self, st, timer=NULL_TIMER) -> torch.Tensor:
        """Wait for the combine, weighted sum per token, shared experts."""
        with timer.phase("combine"):
            st.pending.wait()
        with timer.phase("unpermute"):
            out = unpermute(st.y_send, st.token_of, st.topk_weights.reshape(-1)[st.order],
                            st.x.shape[0])
        if self.shared is not None:
            with timer.phase("shared_experts"):
                out = out + (st.shared_out if st.shared_out is not None else self.shared(st.x))
        self.last_stats = self._stats(st.send_splits, st.recv_splits, st.send_x, st.y_recv,
                                      st.counts_local)
        return out

    def _send_order(self, topk_idx: torch.Tensor):
        """Pairs sorted by (destination rank, slot there): ``(order [num_pairs]``,
        ``token_of [num_pairs]``, ``send_counts [num_ranks * max_local])``."""
        num_tokens, num_topk = topk_idx.shape
        token_index = torch.arange(num_tokens, device=topk_idx.device)
        dest, slot = self.table.destinations(topk_idx, token_index)
        key = (dest * self.table.max_local + slot).reshape(-1)
        order = torch.argsort(key, stable=True)
        token_of = torch.div(order, num_topk, rounding_mode="floor")
        counts = torch.bincount(key, minlength=self.num_ranks * self.table.max_local)
        return order, token_of, counts

    def _local_order(self, recv_counts: torch.Tensor) -> torch.Tensor:
        """Received rows (grouped by source rank, then slot) in local-expert order.

        ``recv_counts [num_ranks, max_local]``: rows from each source rank for each slot."""
        slots = torch.arange(self.table.max_local, device=recv_counts.device)
        slot_of_row = slots.repeat(self.num_ranks).repeat_interleave(recv_counts.reshape(-1))
        return torch.argsort(slot_of_row, stable=True)

    def _stats(self, send_splits, recv_splits, send_x, y_recv, counts_local) -> EPStats:
        me = self.rank
        sent, recv = sum(send_splits) - send_splits[me], sum(recv_splits) - recv_splits[me]
        row_in = send_x.shape[1] * send_x.element_size()
        row_out = y_recv.shape[1] * y_recv.element_size()
        return EPStats(
            rank=me, num_ranks=self.num_ranks, rows_local=send_splits[me],
            dispatch_rows_sent=sent, dispatch_rows_recv=recv,
            dispatch_bytes_sent=sent * row_in, dispatch_bytes_recv=recv * row_in,
            combine_bytes_sent=recv * row_out, combine_bytes_recv=sent * row_out,
            count_bytes_sent=(self.num_ranks - 1) * self.table.max_local * 8,
            tokens_per_local_expert=counts_local.tolist())
