#!/usr/bin/env bash
# The gpu preset, measured (scripts/gpu_check.py): the book at the gpu preset and the
# benchmarks' GPU parts, one JSON line at the end. Refuses (exit 3) where CUDA is missing.
#   bash scripts/gpu_check.sh [--notebooks 00 02] [--skip-book] [--skip-benchmarks] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import llmlab" 2>/dev/null; then
    "$PY" -m pip install -q -e ".[dev]"
fi
exec "$PY" scripts/gpu_check.py "$@"
