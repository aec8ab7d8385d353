#!/usr/bin/env bash
# The test command: install llmlab, run the unit tests, then every notebook under nbval at
# the smoke preset (seconds per notebook).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -e ".[dev]"
"$PY" -m pytest -q tests "$@"
LLMLAB_PRESET=smoke "$PY" -m pytest -q --nbval-lax -p no:cacheprovider notebooks
