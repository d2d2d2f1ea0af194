#!/usr/bin/env bash
# GPU check of the default path (README commands, default flags): see scripts/gpu_check.py.
#   bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--fashion-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
