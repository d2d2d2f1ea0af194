#!/usr/bin/env bash
# GPU check of the DLN theory lab (issue 26): benchmarks/dln_speed.py on CUDA at d = 1000 / 2000 / 4000 (original vs
# compressed vs narrow, float32, side by side in one run; summary.json names the card) and the full-scale
# `sclft dln completion` at d = 1000, ε = 1e-3 with all three networks. --dry-run: the same commands on the CPU with
# tiny settings (what tests/test_dln.py runs). Commit the folder as benchmarks/results/dln/gpu_<card>/.
#   bash scripts/dln_gpu.sh [--dry-run] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-.}/dln_gpu"
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "dln_gpu.sh: unknown argument $1 (valid: --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DRY" = 1 ]; then
  "$PY" benchmarks/dln_speed.py --dry-run --device cpu --no-progress --out "$OUT/speed"
  "$PY" -m sclft.cli dln completion --device cpu --dim 24 --rank 1 --rank-estimate 2 --scale 0.1 --steps 30 \
    --max-seconds 60 --no-factorization --no-progress --out "$OUT/completion_d1000"
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'dln_gpu.sh: no CUDA device (use --dry-run)')"
  "$PY" benchmarks/dln_speed.py --device cuda --dims 1000 2000 4000 --steps 4000 --max-seconds 240 --no-progress \
    --out "$OUT/speed"
  "$PY" -m sclft.cli dln completion --device cuda --dim 1000 --rank 5 --observed 0.2 --depth 3 --scale 0.001 \
    --steps 20000 --max-seconds 240 --no-factorization --networks compressed narrow original --no-progress \
    --out "$OUT/completion_d1000"
fi
echo "dln_gpu.sh: results in $OUT"
