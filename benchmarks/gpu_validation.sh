#!/usr/bin/env bash
# The GPU half of the validation, for a session that has a GPU (H100/H200), in steps that each
# fit the device tool's 10-minute limit:
#
#   bash benchmarks/gpu_validation.sh calibrate   # ~3-6 min: suite -> gpu-calibrated.yaml + raw data
#   bash benchmarks/gpu_validation.sh measure     # ~5 min: scenarios/validation-gpu.yaml, 2 passes
#   bash benchmarks/gpu_validation.sh report      # MAPE table (python benchmarks/bench_validation.py)
#
# Bring back hardware_profiles/calibrated/gpu-calibrated.yaml, results/calibration-gpu/ and
# results/validation-gpu/ (the device tool returns what is under $OUT: pass OUT to copy them),
# rename the profile after the GPU it measured, and commit them with their provenance.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:?usage: gpu_validation.sh calibrate|measure|report}
case "$step" in
  calibrate)
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
    moesim calibrate --device cuda:0 --quick --name gpu-calibrated \
      --out hardware_profiles/calibrated/gpu-calibrated.yaml --raw-out results/calibration-gpu
    ;;
  measure)
    moesim measure scenarios/validation-gpu.yaml --passes 2 --out results/validation-gpu
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
