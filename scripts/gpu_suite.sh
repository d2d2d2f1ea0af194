#!/usr/bin/env bash
# GPU measurement of the bench (calibration, packed Ray suites, the paper suite's cost): see scripts/gpu_suite.py.
#   bash scripts/gpu_suite.sh [--dry-run] [--out DIR] [--work DIR] [--fashion-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_suite.py "$@"
