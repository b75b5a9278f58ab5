"""Expert-parallel check and measurement, one process per rank.

    torchrun --standalone --nproc_per_node=N -m moesim.measure.ep_worker --cases cases.json \
        --out ep.jsonl

Every rank builds the same weights (same seed), takes its slice of a seeded global batch (and of
the forced ``topk_idx`` when routing is forced), runs ``EPMoELayer`` and checks its output
against a single-device ``MoELayer`` on the same tokens. Rank 0 appends one JSON line per case
with every rank's phase seconds and bytes. Without torchrun it runs as a single rank.

A case (JSON object): ``model`` (MoEModel fields, or a preset name), ``placement`` (expert ids per
rank; default contiguous), ``tokens_per_rank``, ``routing`` ("learned", "uniform" or "zipf:S"),
``dtype`` (default float32), ``seed``, ``iters`` (timed forwards after one warm-up), ``gemm``,
``check`` (default true; false skips building the single-device reference, e.g. for big models),
``overlap`` ("none"; "shared": the shared experts computed while the dispatch is in flight;
"two-batch": two layers of different weights as two interleaved micro-batches,
``two_batch_stack``, checked against the single-device layers applied in turn).
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from moesim.config import MoEModel, load_model
from moesim.core.placement import contiguous
from moesim.harness import launch
from moesim.harness.timing import PhaseTimer
from moesim.measure.ep import EPMoELayer, two_batch_stack
from moesim.measure.forced import forced_topk_ids
from moesim.measure.layers import MoELayer
from moesim.measure.placement import pairs_off_rank


def _model(spec) -> MoEModel:
    return load_model(spec) if isinstance(spec, str) else MoEModel(**spec)


def _forced(routing: str, model: MoEModel, num_tokens: int, seed: int):
    """Global forced ``topk_idx [num_tokens, num_topk]``, or None for the learned router."""
    if routing == "learned":
        return None
    return torch.from_numpy(forced_topk_ids(routing, model.experts, model.top_k, num_tokens,
                                            seed, routing_seed=seed))


def run_case(case: dict, rank: int, num_ranks: int, device: torch.device, group=None) -> dict:
    """Run one case on this rank; returns its record (``ok``, errors, seconds, bytes)."""
    model = _model(case["model"])
    placement = case.get("placement") or contiguous(model.experts, num_ranks).as_lists()
    seed, tokens = int(case.get("seed", 0)), int(case["tokens_per_rank"])
    dtype = case.get("dtype", "float32")
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.randn(num_ranks * tokens, model.hidden, generator=gen, dtype=torch.float64)
    mine = slice(rank * tokens, (rank + 1) * tokens)
    kw = dict(dtype=dtype, device=device, seed=seed, gemm=case.get("gemm", "auto"))
    overlap = case.get("overlap", "none")
    stack = overlap == "two-batch"
    layer = EPMoELayer(model, placement, rank=rank, group=group,
                       overlap="none" if stack else overlap, **kw)
    layers = [layer] + ([EPMoELayer(model, placement, rank=rank, group=group,
                                    **{**kw, "seed": seed + 1})] if stack else [])
    x = x_all[mine].to(dtype=layer.dtype, device=device)
    forced = _forced(case.get("routing", "learned"), model, num_ranks * tokens, seed)
    ids = forced[mine] if forced is not None else None
    timer, iters = PhaseTimer(device), int(case.get("iters", 1))
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    def forward(t=None):
        if stack:
            return two_batch_stack(layers, x, t or PhaseTimer(device), ids)
        return layer(x, t, topk_idx=ids) if t is not None else layer(x, topk_idx=ids)
    forward()                                           # warm-up
    for _ in range(iters):
        out = forward(timer)
    ok, err = True, None
    if case.get("check", True):
        if stack:
            first = MoELayer(model, **kw)(x, topk_idx=ids)
            ok, err = _check(out, MoELayer(model, **{**kw, "seed": seed + 1}), first, ids)
        else:
            ok, err = _check(out, MoELayer(model, **kw), x, ids)
    if ids is None:
        ids, _ = layer.router(x)
    return {"rank": rank, "ok": ok, "max_abs_err": err, "tokens": tokens,
            "seconds": {k: v / iters for k, v in timer.seconds.items()},
            "pairs_off_rank": pairs_off_rank(ids.tolist(), range(tokens), placement, rank),
            "element_bytes": out.element_size(), **layer.last_stats.as_dict()}


def _check(out: torch.Tensor, reference: MoELayer, x: torch.Tensor, ids) -> tuple[bool, float]:
    """EP output against the single-device layer on the same tokens: (close?, max abs error)."""
    expected = reference(x, topk_idx=ids)
    err = (out.double() - expected.double()).abs().max().item() if len(x) else 0.0
    try:
        torch.testing.assert_close(out, expected)
    except AssertionError:
        return False, err
    return True, err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", required=True, help="JSON file: a case or a list of cases")
    parser.add_argument("--out", required=True, help="JSON-lines file rank 0 appends to")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (one GPU per rank; default: cuda where present)")
    args = parser.parse_args(argv)
    with open(args.cases) as f:
        cases = json.load(f)
    cases = [cases] if isinstance(cases, dict) else cases
    ctx = launch.init_rank(args.device, always_group=True)
    all_ok = True
    try:
        for case in cases:
            records = launch.gather(ctx, run_case(case, ctx.rank, ctx.world, ctx.device))
            all_ok &= all(r["ok"] for r in records)
            if ctx.rank == 0:
                line = {"case": case.get("name", ""), "num_ranks": ctx.world,
                        "backend": ctx.backend, "device": str(ctx.device),
                        "torch": torch.__version__, "case_spec": case, "ranks": records}
                with open(args.out, "a") as f:
                    f.write(json.dumps(line) + "\n")
    finally:
        launch.close_rank(ctx)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
