"""moesim's whole-model prediction beside end-to-end figures engine teams published.

    python benchmarks/published_figures.py [--out results/published-figures]

Each entry of ``SETUPS`` is one published figure with its stated setup (model, GPU type and
count, parallelism, batch or concurrency, sequence lengths, dtypes, engine), the exact source
(URL and title) and what the figure contains that one moesim step does not. The setup is
translated into one ``moesim.predict_model`` call per hardware profile (the datasheet one and,
where it exists, the AIConfigurator-calibrated one of the same engine); nothing is fitted to
these figures and no model field is changed to approach them. Writes ``table.csv`` and
``README.md`` (provenance: date, git commit, command) under ``--out``.

Metrics:

* ``output_tokens_per_s_per_node`` (decode-only figures): moesim ``tokens_per_s_per_node`` of the
  decode step, ``batch / TPOT`` over the node's 8 GPUs.
* ``input_tokens_per_s_per_node`` (prefill-only figures): ``batch * prompt_len / TTFT`` per node.
* ``output_tokens_per_s_per_gpu`` of an in-flight-batching benchmark (``trtllm-bench``: prefill
  and decode share the GPUs): the GPU spends, per output token, ``TPOT / b`` decoding (``b``
  sequences in flight per GPU) and ``(ISL / OSL) / P`` prefilling (``P``: prefill tokens/s per
  GPU), so ``1 / (TPOT / b + (ISL / OSL) / P)``, with the decode context at its mean over the
  output, ``ISL + OSL / 2``, and one prompt per GPU per prefill step.
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

LMSYS = ("https://lmsys.org/blog/2025-05-05-large-scale-ep/",
         "LMSYS / SGLang Team, 'Deploying DeepSeek with PD Disaggregation and Large-scale Expert "
         "Parallelism on 96 H100 GPUs' (2025-05-05)")
DEEPSEEK = ("https://github.com/deepseek-ai/open-infra-index/blob/main/202502OpenSourceWeek/"
            "day_6_one_more_thing_deepseekV3R1_inference_system_overview.md",
            "DeepSeek, 'Day 6: One More Thing, DeepSeek-V3/R1 Inference System Overview' (statistics of 2025-02-27/28)")
TRTLLM = ("https://nvidia.github.io/TensorRT-LLM/blogs/Best_perf_practice_on_DeepSeek-R1_in_"
          "TensorRT-LLM.html",
          "NVIDIA TensorRT-LLM, 'How to get best performance on DeepSeek-R1 in TensorRT LLM' "
          "(docs/source/blogs/Best_perf_practice_on_DeepSeek-R1_in_TensorRT-LLM.md)")

#: One published figure per entry. ``run``: the ``predict_model`` fields of the stated setup;
#: ``prefill`` (in-flight-batching figures only): the prefill step of the same deployment.
SETUPS: list[dict] = [
    {"id": "sglang-h100-decode-ep72", "engine": "SGLang (PD disaggregation, DeepEP low-latency, "
     "DeepGEMM, EPLB, TBO)", "source_url": LMSYS[0], "source_title": LMSYS[1],
     "quote": "Decode: 9 nodes (9x8xH100, EP72), 22,282 tokens/sec per node for 2K inputs; "
              "table: batch size 256, KV cache length 2,000; 256 + 32 redundant = 288 experts",
     "gpus": 72, "metric": "output_tokens_per_s_per_node", "unit": "tokens/s per node",
     "published": 22282.0, "model": "deepseek-v3",
     "hardware": ["h100-sxm", "h100-sxm-sglang"],
     "run": {"phase": "decode", "batch": 256 * 72, "context": 2000, "dp_attn": 72,
             "overlap": "two-batch", "placement": "replicated:32"},
     "not_in_moesim": "EPLB from a matched (not perfect) expert distribution: moesim routes "
                      "uniformly (perfect balance); scheduler and sampling between steps; "
                      "CUDA graphs are assumed (fused kernel counts)"},
    {"id": "sglang-h100-prefill-ep32", "engine": "SGLang (DeepEP normal, DeepGEMM, TBO)",
     "source_url": LMSYS[0], "source_title": LMSYS[1],
     "quote": "Prefill, 16,384 tokens per device, input length 4,096, 4 nodes (EP32): "
              "59,337 tokens/s per node with simulated perfect EPLB (50,302 default)",
     "gpus": 32, "metric": "input_tokens_per_s_per_node", "unit": "tokens/s per node",
     "published": 59337.0, "model": "deepseek-v3",
     "hardware": ["h100-sxm", "h100-sxm-sglang"],
     "run": {"phase": "prefill", "batch": 4 * 32, "prompt_len": 4096, "dp_attn": 32,
             "overlap": "two-batch"},
     "not_in_moesim": "attention load split across the two micro-batches (moesim halves the "
                      "batch); CPU-blocking dispatch launch order; no chunked prefill in "
                      "either"},
    {"id": "deepseek-profile-h800-decode-ep128", "engine": "DeepSeek in-house (profile trace)",
     "source_url": LMSYS[0], "source_title": LMSYS[1] + ", decode table, column 'DeepSeek "
     "Profile' (estimated by LMSYS from github.com/deepseek-ai/profile-data)",
     "quote": "DeepSeek Profile: batch size 128, KV cache length 4,096, 16 nodes, "
              "18,598 tokens/s per node; profile-data README: EP128, TP1, balanced routing",
     "gpus": 128, "metric": "output_tokens_per_s_per_node", "unit": "tokens/s per node",
     "published": 18598.0, "model": "deepseek-v3", "hardware": ["h800-sxm"],
     "run": {"phase": "decode", "batch": 128 * 128, "context": 4096, "dp_attn": 128,
             "overlap": "two-batch"},
     "not_in_moesim": "a step time read from one kernel trace, not a served run; DeepSeek's "
                      "5-stage decode pipeline (moesim: two-batch overlap); no calibrated H800 "
                      "profile exists"},
    {"id": "deepseek-prod-h800-decode-ep144", "engine": "DeepSeek in-house (production)",
     "source_url": DEEPSEEK[0], "source_title": DEEPSEEK[1],
     "quote": "Decoding EP144 / DP144, 18 nodes, 2 routed experts per GPU with 32 redundant; "
              "~14.8k output tokens/s per H800 node; 20-22 tokens/s per user; mean KV length "
              "4,989 (24 h average)",
     "gpus": 144, "metric": "output_tokens_per_s_per_node", "unit": "tokens/s per node",
     "published": 14800.0, "model": "deepseek-v3", "hardware": ["h800-sxm"],
     "run": {"phase": "decode", "batch": 88 * 144, "context": 4989, "dp_attn": 144,
             "overlap": "two-batch", "placement": "replicated:32"},
     "derived": "batch not stated: 88 sequences per GPU = 14,800 / 8 / 21 tokens/s per user, "
                "so this row compares TPOT at that batch (1/21 s = 47.6 ms published)",
     "not_in_moesim": "a 24-hour production average (load varies, real routing imbalance, "
                      "requests arriving and leaving); MTP use is not stated (LMSYS compare it "
                      "with a simulated-MTP run); 5-stage decode pipeline"},
    {"id": "trtllm-h200-maxtput-fp8", "engine": "TensorRT-LLM (PyTorch workflow, trtllm-bench)",
     "source_url": TRTLLM[0], "source_title": TRTLLM[1] + ", 'H200 max-throughput'",
     "quote": "8xH200, DeepSeek-R1 FP8, --tp 8 --ep 8, attention DP, concurrency 1024, "
              "max_batch_size 128, ISL 1K, OSL 2K: Per GPU Output Throughput 1436.1584 "
              "tokens/sec/gpu",
     "gpus": 8, "metric": "output_tokens_per_s_per_gpu", "unit": "tokens/s per GPU",
     "published": 1436.1584, "model": "deepseek-v3",
     "hardware": ["h200-sxm", "h200-sxm-trtllm"], "isl": 1024, "osl": 2048,
     "run": {"phase": "decode", "batch": 1024, "context": 1024 + 1024, "dp_attn": 8},
     "prefill": {"phase": "prefill", "batch": 8, "prompt_len": 1024, "dp_attn": 8},
     "not_in_moesim": "in-flight batching mixes prefill chunks into decode steps (moesim "
                      "time-shares them, formula above); ramp-up and drain of 5,120 requests; "
                      "no MTP; CUDA graphs only at batch 128"},
    {"id": "trtllm-b200-maxtput-fp4", "engine": "TensorRT-LLM (PyTorch workflow, trtllm-bench)",
     "source_url": TRTLLM[0], "source_title": TRTLLM[1] + ", 'B200 max-throughput for R1 "
     "with FP16 KV cache'",
     "quote": "8xB200, DeepSeek-R1-FP4, --tp 8 --ep 8, attention DP, concurrency 3072, "
              "max_batch_size 384, ISL 1K, OSL 2K: Per GPU Output Throughput 4548.0105 tps/gpu",
     "gpus": 8, "metric": "output_tokens_per_s_per_gpu", "unit": "tokens/s per GPU",
     "published": 4548.0105, "model": "deepseek-v3", "hardware": ["b200", "b200-trtllm"],
     "isl": 1024, "osl": 2048,
     "run": {"phase": "decode", "batch": 3072, "context": 1024 + 1024, "dp_attn": 8,
             "weight_dtype": "nvfp4"},
     "prefill": {"phase": "prefill", "batch": 8, "prompt_len": 1024, "dp_attn": 8,
                 "weight_dtype": "nvfp4"},
     "not_in_moesim": "the FP4 checkpoint quantizes the MoE layers; moesim's one weight dtype "
                      "puts attention and dense layers in NVFP4 too (fewer bytes than served); "
                      "in-flight batching as above; no MTP"},
]


def predict_setup(setup: dict, hardware: str) -> dict:
    """moesim's figure for ``setup`` on ``hardware`` (same metric and unit as published)."""
    from moesim.serving import predict_model

    r = predict_model(setup["model"], hardware, **setup["run"])
    out = {"fits_in_memory": bool(r["fits_in_memory"]), "bottleneck": r["bottleneck"],
           "moe_bottleneck": r["moe_bottleneck"], "tpot_s": r["tpot_s"], "ttft_s": r["ttft_s"]}
    if setup["metric"] in ("output_tokens_per_s_per_node", "input_tokens_per_s_per_node"):
        return {**out, "predicted": float(r["tokens_per_s_per_node"])}
    p = predict_model(setup["model"], hardware, **setup["prefill"])
    per_gpu = setup["run"]["batch"] / r["devices"]
    gpu_s_per_token = r["tpot_s"] / per_gpu + setup["isl"] / setup["osl"] / float(
        p["tokens_per_s_per_device"])
    return {**out, "ttft_s": p["ttft_s"], "predicted": 1.0 / gpu_s_per_token,
            "decode_only": float(r["tokens_per_s_per_device"])}


def table() -> pd.DataFrame:
    rows = []
    for s in SETUPS:
        for hw in s["hardware"]:
            pred = predict_setup(s, hw)
            rows.append({"id": s["id"], "engine": s["engine"], "gpus": s["gpus"],
                         "hardware": hw, "metric": s["metric"], "unit": s["unit"],
                         "published": s["published"], **pred,
                         "ratio": pred["predicted"] / s["published"],
                         "derived_input": s.get("derived", ""),
                         "not_in_moesim": s["not_in_moesim"], "source_url": s["source_url"]})
    return pd.DataFrame(rows)


def provenance(argv: list[str]) -> dict:
    from moesim.harness.provenance import git_commit

    commit, dirty = git_commit()
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": f"{commit}{' (dirty)' if dirty else ''}",
            "command": "python " + " ".join(shlex.quote(a) for a in argv)}


def write(tab: pd.DataFrame, prov: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tab.to_csv(out / "table.csv", index=False, float_format="%.6g")
    lines = ["# moesim beside published end-to-end figures", "",
             f"Generated {prov['date']} at commit `{prov['commit']}` by `{prov['command']}`. "
             "Predictions are moesim's; published figures are the sources'. Nothing was fitted "
             "to them. Ratio = predicted / published.", "",
             "| setup | profile | published | moesim | ratio | unit |", "|---|---|---|---|---|---|"]
    for _, r in tab.iterrows():
        lines.append(f"| {r['id']} | {r['hardware']} | {r['published']:,.0f} | "
                     f"{r['predicted']:,.0f} | {r['ratio']:.2f} | {r['unit']} |")
    lines += ["", "## Setups, sources and what the figure includes that one moesim step does not",
              ""]
    for s in SETUPS:
        lines += [f"### {s['id']}", "", f"- source: [{s['source_title']}]({s['source_url']})",
                  f"- published: {s['quote']}", f"- engine: {s['engine']}",
                  f"- moesim inputs: model `{s['model']}`, {s['gpus']} GPUs, `{s['run']}`"
                  + (f", prefill `{s['prefill']}`" if "prefill" in s else "")]
        if "derived" in s:
            lines.append(f"- derived input: {s['derived']}")
        lines += [f"- not in moesim's step: {s['not_in_moesim']}", ""]
    (out / "README.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/published-figures")
    args = parser.parse_args(argv)
    tab = table()
    write(tab, provenance(["benchmarks/published_figures.py", *sys.argv[1:]]), Path(args.out))
    with pd.option_context("display.width", 200):
        print(tab[["id", "hardware", "published", "predicted", "ratio", "unit"]].to_string(
            index=False, float_format=lambda x: f"{x:,.2f}"))
    print(f"ratio predicted/published: median {np.median(tab['ratio']):.2f}")


if __name__ == "__main__":
    main()
