#!/usr/bin/env bash
# The widget tests under Colab's ipywidgets 7.7.1 and under the installed 8.x.
#
#   bash scripts/widgets_compat.sh            # venv in $LLMLAB_COMPAT_VENV or .venv-ipywidgets7/
#
# The venv sees everything the current python has (torch, llmlab's
# dependencies) and adds only ipywidgets 7.7.1 (plus its widgetsnbextension 3) on top, so it
# costs seconds after the first run. tests/test_widgets.py drives every widget's construction
# and callbacks; tests/test_widgets.py::test_ipywidgets_version_is_one_the_series_supports
# reports which version ran.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LLMLAB_COMPAT_VENV:-.venv-ipywidgets7}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" || {
        echo "widgets_compat: could not make a venv with $PY (on Debian: apt-get install python3-venv)" >&2
        exit 1; }
    # The venv sees $PY's own packages after its own (a .pth that adds $PY's site folders), so it
    # works whether $PY is a system python or itself a venv (--system-site-packages would reach
    # past a venv to its base interpreter, which may lack torch).
    "$PY" -c "import sysconfig; print(''.join(f'import site; site.addsitedir({p!r})\n' for p in dict.fromkeys([sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']])))" \
        > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_parent_site.pth"
fi
"$VENV/bin/python" -m pip install -q "ipywidgets==7.7.1"
v7=$("$VENV/bin/python" -c "import ipywidgets; print(ipywidgets.__version__)")
v8=$("$PY" -c "import ipywidgets; print(ipywidgets.__version__)")
if [ "$v7" != "7.7.1" ]; then
    echo "widgets_compat: the venv has ipywidgets $v7, not 7.7.1" >&2; exit 1
fi
case "$v8" in 8.*) ;; *) echo "widgets_compat: the main python has ipywidgets $v8, not 8.x" \
    "(pip install -e \".[dev]\" installs 8)" >&2; exit 1;; esac
for pair in "$v7:$VENV/bin/python" "$v8:$PY"; do
    echo "== widget tests under ipywidgets ${pair%%:*}"
    "${pair#*:}" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_widgets.py
done
echo "widgets_compat: ipywidgets $v7 and $v8 passed in $(( $(date +%s) - start )) s"
