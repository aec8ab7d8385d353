"""The browser check's own logic (always), and the check itself when asked for.

``scripts/browser_check.sh`` (run by ``.ci/run``) is the real check: JupyterLab, Chromium and
every widget notebook. Here: every widget in the notebooks has a browser step list, and the
notebook copies the check serves are cut right. ``LLMLAB_BROWSER=1 pytest tests/test_browser.py``
also runs the whole check (about two minutes; needs /usr/bin/chromium and playwright).
"""
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("browser_check", ROOT / "scripts" / "browser_check.py")
bc = importlib.util.module_from_spec(spec)
sys.modules["browser_check"] = bc      # its dataclasses look their module up by name
spec.loader.exec_module(bc)

# what constructs a widget in a notebook cell
WIDGET_CALL = re.compile(r"_widget\(|\.calculator\(|W\.interact\(|ipywidgets\.interact\(")


def load(name):
    return json.loads((ROOT / "notebooks" / name).read_text())


def test_every_widget_cell_has_a_browser_check():
    cells = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(load(path.name)["cells"]):
            src = "".join(cell["source"])
            if cell["cell_type"] == "code" and WIDGET_CALL.search(src) and "def " not in src.split("\n")[0]:
                cells.add((path.name, i))
    checked = {(w.notebook, bc.widget_cell_index(load(w.notebook), w.marker)) for w in bc.WIDGETS}
    assert cells == checked, f"widget cells without a browser check: {cells - checked}"
    assert all(w.steps for w in bc.WIDGETS)


def test_cut_notebook_ends_at_the_widget_without_outputs():
    w = bc.WIDGETS[0]
    nb = load(w.notebook)
    cut = bc.cut_notebook(nb, w.marker)
    assert w.marker in "".join(cut["cells"][-1]["source"])
    assert len(cut["cells"]) == bc.widget_cell_index(nb, w.marker) + 1 < len(nb["cells"])
    code = [c for c in cut["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert "widgets" not in cut["metadata"] and "widgets" in nb["metadata"]
    with pytest.raises(ValueError, match="update WIDGETS"):
        bc.cut_notebook(nb, "no_such_widget(")


def test_missing_chromium_is_a_clear_refusal(capsys, tmp_path):
    pytest.importorskip("playwright")
    assert bc.main(["--chromium", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "apt-get install -y chromium" in capsys.readouterr().err


@pytest.mark.skipif(os.environ.get("LLMLAB_BROWSER") != "1",
                    reason="the browser check runs from scripts/browser_check.sh (.ci/run); "
                           "LLMLAB_BROWSER=1 runs it here")
def test_widgets_in_a_real_browser(tmp_path):
    assert bc.main(["--out", str(tmp_path / "shots")]) == 0
    assert len(list((tmp_path / "shots").glob("*.png"))) == len(bc.WIDGETS)


def test_ci_runs_the_widget_checks():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/browser_check.sh" in ci and "bash scripts/widgets_compat.sh" in ci
    sh = (ROOT / "scripts" / "browser_check.sh").read_text()
    assert "apt-get install" in sh and "pip install -q playwright" in sh   # a fresh machine
