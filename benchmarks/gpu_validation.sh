#!/usr/bin/env bash
# The GPU half of the validation, for a session that has a GPU (H100/H200), in steps that each
# fit the device tool's 10-minute limit:
#
#   bash benchmarks/gpu_validation.sh calibrate   # ~3-6 min: suite -> gpu-calibrated.yaml + raw data
#   bash benchmarks/gpu_validation.sh measure     # ~5 min: scenarios/validation-gpu.yaml, 2 passes
#   bash benchmarks/gpu_validation.sh report      # MAPE table (python benchmarks/bench_validation.py)
#
# NOT RUN YET: no GPU was lent to the sessions that wrote this script and the CUDA branch of
# `moesim measure` (NCCL, weights and inputs on cuda:LOCAL_RANK, phase timer synchronising the
# GPU, pynvml facts); everything here was only exercised on CPUs. The first GPU run validates it.
#
# Before any work each step checks that it really runs on a GPU (nvidia-smi lists one and
# torch.cuda.is_available() is true) and stops with exit 3 otherwise: the CPU must never be timed
# in place of the GPU. `moesim measure --device cuda` also refuses profiles of another device kind.
#
# Bring back hardware_profiles/calibrated/gpu-calibrated.yaml, results/calibration-gpu/ and
# results/validation-gpu/ (the device tool returns what is under $OUT: pass OUT to copy them),
# rename the profile after the GPU it measured, and commit them with their provenance.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:?usage: gpu_validation.sh calibrate|measure|report}

require_gpu() {
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi --query-gpu=name --format=csv,noheader >/dev/null 2>&1; then
    echo "gpu_validation.sh: no NVIDIA GPU here (nvidia-smi missing or lists none); refusing to time the CPU in its place" >&2
    exit 3
  fi
  if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_validation.sh: torch $(python -c 'import torch; print(torch.__version__)') sees no CUDA device (CPU-only build?); install a CUDA build of torch" >&2
    exit 3
  fi
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
}

case "$step" in
  calibrate)
    require_gpu
    moesim calibrate --device cuda:0 --quick --name gpu-calibrated \
      --out hardware_profiles/calibrated/gpu-calibrated.yaml --raw-out results/calibration-gpu
    ;;
  measure)
    require_gpu
    moesim measure scenarios/validation-gpu.yaml --device cuda --passes 2 --out results/validation-gpu
    ;;
  report)
    python benchmarks/bench_validation.py results/validation-gpu/results.csv
    ;;
  *)
    echo "unknown step '$step'; expected calibrate, measure or report" >&2
    exit 2
    ;;
esac
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/hardware_profiles/calibrated" "$OUT/results"
  cp -f hardware_profiles/calibrated/gpu-calibrated.yaml "$OUT/hardware_profiles/calibrated/" 2>/dev/null || true
  cp -rf results/calibration-gpu results/validation-gpu "$OUT/results/" 2>/dev/null || true
fi
