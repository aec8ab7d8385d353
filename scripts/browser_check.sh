#!/usr/bin/env bash
# The widgets in a real browser (scripts/browser_check.py): JupyterLab on localhost, Debian's
# Chromium driven by Playwright, every widget notebook at the smoke preset. Installs what is
# missing: chromium with apt-get (as root, or with sudo), the playwright package with pip (no
# browser download: Playwright drives /usr/bin/chromium). Screenshots go to
# browser-screenshots/ (or $LLMLAB_SCREENSHOTS); extra arguments go to the Python script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x /usr/bin/chromium ]; then
    echo "browser check: installing Debian's chromium"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if ! "$PY" -c "import playwright" 2>/dev/null; then
    echo "browser check: installing the playwright package"
    "$PY" -m pip install -q playwright
fi
if ! "$PY" -c "import jupyterlab" 2>/dev/null; then
    echo "browser check: JupyterLab is missing: pip install -e \".[dev]\" (or \".[lab]\")" >&2
    exit 2
fi
exec "$PY" scripts/browser_check.py --out "${LLMLAB_SCREENSHOTS:-browser-screenshots}" "$@"
