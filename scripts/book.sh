#!/usr/bin/env bash
# The book command: install llmlab, then run every notebook headless at the cpu preset (or
# $LLMLAB_PRESET) and write the executed notebooks and HTML copies to book/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -e ".[dev]"
"$PY" -m llmlab.book "$@"
