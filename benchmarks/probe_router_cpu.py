"""How the router phase's time scales on this CPU: experts, top-k and tokens (a primitive probe).

Run: ``flock -x /tmp/moesim-cpu.lock python benchmarks/probe_router_cpu.py`` (one torch thread,
as the calibrated 1-thread profiles). Times the router of ``moesim.harness.microbench.ops``
(router GEMM, fp32 softmax, top-k, gather, normalise) and its GEMM alone over hidden 256,
experts 8-256, top-k 2 and 8, 16-4096 tokens, and writes ``results/router-probe-cpu/`` with the
model's router prediction beside each point (``cpu-epyc-zen4-1t``). Why: the held-out CPU set
under-predicts the router by ~50 % while the development set's router error has the other sign;
the probe shows the scaling the model's ``t = gemm + score_bytes / rate`` form would have to
follow (score bytes ``T (8 E + 8 k)``). Measures only: nothing here is fitted or read by moesim.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_common import ROOT, publish, time_call  # noqa: E402
HIDDEN = 256


def measure(repeats: int) -> pd.DataFrame:
    import torch

    from moesim.harness.microbench.ops import router

    torch.set_num_threads(1)
    rows = []
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for experts in (8, 32, 128, 256):
            for top_k in (2, 8):
                for tokens in (16, 256, 1024, 4096):
                    x, w = torch.randn(tokens, HIDDEN, dtype=dt), torch.randn(HIDDEN, experts, dtype=dt)
                    rows.append({"dtype": name, "experts": experts, "top_k": top_k,
                                 "tokens": tokens,
                                 "measured_router_s": time_call(lambda: router(x, w, top_k),
                                                                repeats, 3),
                                 "measured_gemm_s": time_call(lambda: x @ w, repeats, 3)})
    return pd.DataFrame(rows)


def predicted(df: pd.DataFrame, profile: str) -> np.ndarray:
    from moesim import predict

    return np.array([predict("mixtral-8x7b", profile, tokens=int(r.tokens), hidden=HIDDEN,
                             expert_ffn=HIDDEN, experts=int(r.experts), top_k=int(r.top_k),
                             weight_dtype=r.dtype, activation_dtype=r.dtype).breakdown_s["router"]
                     for r in df.itertuples()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--profile", default="cpu-epyc-zen4-1t")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "router-probe-cpu")
    args = ap.parse_args()
    df = measure(args.repeats)
    df["predicted_router_s"] = predicted(df, args.profile)
    df["score_s"] = df.measured_router_s - df.measured_gemm_s
    df["ratio"] = (df.predicted_router_s / df.measured_router_s).round(3)
    publish(args.out, df, "python benchmarks/probe_router_cpu.py", args.profile)

if __name__ == "__main__":
    main()
