#!/usr/bin/env bash
# Refit every AIConfigurator-calibrated GPU profile and re-run its held-out validation with
# today's model (run after any change to moesim/core, moesim/calibration/aic or the datasheet
# profiles). CPU only; ~15 min on 2 cores. Needs `pip install -e '.[aic]'`.
#   bash benchmarks/regen_aic.sh            # all systems x backends
#   bash benchmarks/regen_aic.sh h200_sxm   # one system
set -euo pipefail
cd "$(dirname "$0")/.."
# h100/h200/b200: the systems the moe_perf model was developed on; a100/gb200/l40s: held-out
# systems (first calibrated and validated after the last model change, 2026-12-03), and
# rtx_pro_6000_server (added after every change of 2026-12-03)
declare -A BASE=([h100_sxm]=h100-sxm [h200_sxm]=h200-sxm [b200_sxm]=b200
                 [a100_sxm]=a100-sxm-80gb [gb200]=gb200-nvl72 [l40s]=l40s
                 [rtx_pro_6000_server]=rtx-pro-6000-server [b60]=arc-pro-b60)
SYSTEMS=("${@:-h100_sxm h200_sxm b200_sxm a100_sxm gb200 l40s rtx_pro_6000_server b60}")
# engines with moe_perf tables per system (default: all three)
declare -A ENGINES=([b60]="vllm")
for sys in ${SYSTEMS[@]}; do
  for be in ${ENGINES[$sys]:-trtllm vllm sglang}; do
    python -m moesim calibrate --from-aic "$sys" --backend "$be" --base "${BASE[$sys]}" \
      --out "hardware_profiles/calibrated/${BASE[$sys]}-$be.yaml"
  done
done
for sys in ${SYSTEMS[@]}; do
  for be in ${ENGINES[$sys]:-trtllm vllm sglang}; do
    cross=(); [[ $sys == h200_sxm ]] && cross=(--cross-from h100_sxm)
    python benchmarks/bench_aic_validation.py --system "$sys" --backend "$be" --per-stratum 30 "${cross[@]}"
  done
done
# datasheet profiles (no calibration) on the same rows, for the README's comparison
for pair in h100_sxm:trtllm b200_sxm:trtllm h200_sxm:trtllm h200_sxm:vllm h200_sxm:sglang; do
  sys=${pair%%:*}; be=${pair##*:}
  python benchmarks/bench_aic_validation.py --system "$sys" --backend "$be" --per-stratum 30 \
    --profile "${BASE[$sys]}"
done
