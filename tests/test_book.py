"""The book command, the README's two commands, and the hygiene of the committed notebooks."""
import json
import re
import time
from pathlib import Path

import pytest

from llmlab import book

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_readme_table_uses_measured_minutes(tmp_path):
    stems = [p.stem for p in NOTEBOOKS]
    timings = {"cpu": {stems[0]: 1.234}}
    table = book.readme_table(timings)
    assert f"[{stems[0]}](notebooks/{stems[0]}.ipynb)" in table and "| 1.2 |" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{book.START}\nold table\n{book.END}\noutro\n")
    book.update_readme(timings, readme)
    text = readme.read_text()
    assert "old table" not in text and "| 1.2 |" in text
    assert text.startswith("intro\n") and text.endswith("outro\n")


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [l.split("#")[0].strip() for l in block.splitlines() if l.strip()]
    assert commands == ["bash scripts/book.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    for script in ("book.sh", "test.sh"):
        assert 'pip install -q -e ".[dev]"' in (ROOT / "scripts" / script).read_text()


def test_unknown_preset_fails_before_any_notebook_runs(capsys, monkeypatch):
    monkeypatch.setattr(book, "run", lambda *a, **k: pytest.fail("a notebook ran"))
    assert book.main(["--preset", "huge", "00"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("book: error: unknown preset 'huge'")
    assert "valid presets are: cpu, gpu, smoke" in err


def test_unknown_notebook_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.setattr(book, "run", lambda *a, **k: pytest.fail("a notebook ran"))
    assert book.main(["--preset", "smoke", "99"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("book: error: no notebook matches '99'")
    assert "00" in err


@pytest.mark.parametrize("args, message", [
    (["--preset", "nosuch"], "book: error: unknown preset 'nosuch'"),
    (["--preset", "smoke", "99"], "book: error: no notebook matches '99'"),
])
def test_command_line_user_errors(args, message, tmp_path):
    """``python -m llmlab.book`` itself: exit status 2, one line on stderr, no traceback."""
    import os
    import subprocess
    import sys

    env = os.environ | {"PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "llmlab.book", *args, "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


SETUP = 'if importlib.util.find_spec("llmlab") is None:'

def png_width(b64: str) -> int:
    """Pixel width of a base64 PNG (from its IHDR chunk)."""
    import base64
    import struct

    head = base64.b64decode("".join(b64)[:64])
    return struct.unpack(">I", head[16:20])[0]



@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_hygiene(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert SETUP in "".join(code[0]["source"]), "first code cell must be the setup cell"
    assert "nb.setup(" in "".join(code[1]["source"]), "second code cell must choose the preset"
    assert path.stat().st_size < 2_000_000, "keep figures compact"
    for cell in code:
        outs = cell.get("outputs", [])
        if outs:
            assert cell.get("execution_count") is not None, "outputs without an execution count"
        assert "NBVAL_" not in "".join(cell["source"]), "test markers belong in cell tags"
        for o in outs:
            assert o.get("output_type") != "error", "committed notebooks are clean runs"
            png = o.get("data", {}).get("image/png")
            if png:
                width = png_width(png)
                shown = o.get("metadata", {}).get("image/png", {}).get("width", width)
                assert width >= 2 * shown, f"figure not sharp on a high-DPI screen in {path.name}"
            text = json.dumps(o.get("text", "")) + json.dumps(o.get("data", {}).get("text/plain", ""))
            assert not re.search(r"(/tmp/|/root/|/home/\w+/)", text), f"machine path in {path.name}"
    import nbformat

    # progress bars show where they ended, not the text they had when first drawn
    stale = book.finish_progress_bars(nbformat.reads(path.read_text(encoding="utf-8"), 4))
    assert stale == 0, f"{stale} progress bars in {path.name} show their first-drawn text"


def _tqdm_notebook(value, total, right):
    """A notebook holding one output of a tqdm widget (HBox of HTML, FloatProgress, HTML)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/plain": "training:   0%|          | 0/900 [00:00<?, ?step/s]",
        "application/vnd.jupyter.widget-view+json": {"model_id": "box", "version_major": 2,
                                                      "version_minor": 0}})]
    nb.cells = [cell]
    state = {"box": {"model_name": "HBoxModel", "state": {"children": [
                 "IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
             "l": {"model_name": "HTMLModel", "state": {"value": "training:\u2007100%"}},
             "p": {"model_name": "FloatProgressModel", "state": {"value": value, "max": total}},
             "r": {"model_name": "HTMLModel", "state": {"value": right}}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    return nb


def test_finish_progress_bars_writes_the_final_state():
    nb = _tqdm_notebook(900.0, 900.0, "\u2007900/900\u2007[03:03&lt;00:00,\u20072.69step/s]")
    assert book.finish_progress_bars(nb) == 1
    text = nb.cells[0].outputs[0]["data"]["text/plain"]
    assert text == "training: 100%|██████████| 900/900 [03:03<00:00, 2.69step/s]"
    half = _tqdm_notebook(450.0, 900.0, "450/900")
    book.finish_progress_bars(half)
    assert "|█████     |" in half.cells[0].outputs[0]["data"]["text/plain"]
    other = _tqdm_notebook(1.0, 1.0, "x")                     # not a tqdm box: left alone
    other.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]["p"][
        "model_name"] = "IntSliderModel"
    assert book.finish_progress_bars(other) == 0
    assert "0%|" in other.cells[0].outputs[0]["data"]["text/plain"]


def test_readme_minutes_survive_a_partial_book_run():
    """``--inplace`` over a few notebooks rewrites the table from the README's own minutes plus
    the new ones: the table round-trips through readme_timings."""
    from llmlab import book

    stems = [p.stem for p in book.notebooks()]
    timings = {"cpu": {s: float(i) + 0.5 for i, s in enumerate(stems)}, "gpu": {stems[0]: 1.2}}
    text = f"{book.START}\n{book.readme_table(timings)}\n{book.END}"
    assert book.readme_timings(text) == timings


def test_a_cell_timeout_runs_the_notebook_again_once(capsys):
    """A lost kernel reply looks like a cell timeout: the book runs the notebook again from the
    top once, and a second timeout is the error."""
    from nbclient.exceptions import CellTimeoutError

    calls = []

    def client(fail_times):
        class Fake:
            def __init__(self, nb, **kw):
                self.nb = nb

            def execute(self):
                calls.append(1)
                if len(calls) <= fail_times:
                    raise CellTimeoutError("A cell timed out while it was being executed, after 900 seconds.")
                self.nb["ran"] = True
        return Fake

    out = book.execute({"cells": []}, Path("02_x.ipynb"), 900, client(1))
    assert out["ran"] and len(calls) == 2
    assert "running it again from the top" in capsys.readouterr().out
    calls.clear()
    with pytest.raises(CellTimeoutError):
        book.execute({"cells": []}, Path("02_x.ipynb"), 900, client(2))
    assert len(calls) == 2


def test_in_slices_finds_a_message_a_long_poll_missed_and_keeps_the_timeout():
    """The book's kernel client polls in short slices: a message that one long poll would have
    slept through is returned by the next slice; with nothing to read, Empty comes only when the
    whole timeout has passed; timeout None waits until a message comes."""
    import asyncio
    from queue import Empty

    def channel(ready_after):
        asked = []

        async def get_msg(timeout=None):
            asked.append(timeout)
            if len(asked) > ready_after:
                return {"msg": len(asked)}
            await asyncio.sleep(0)
            raise Empty
        return get_msg, asked

    get_msg, asked = channel(ready_after=3)
    got = asyncio.run(book.in_slices(get_msg, step=0.01)(timeout=100))
    assert got == {"msg": 4} and asked == [0.01] * 4          # slices, not one poll of 100 s
    get_msg, asked = channel(ready_after=10 ** 9)
    t0 = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(book.in_slices(get_msg, step=0.01)(timeout=0.05))
    assert 0.04 <= time.monotonic() - t0 < 1.0 and max(asked) <= 0.01 + 1e-9
    get_msg, asked = channel(ready_after=5)
    assert asyncio.run(book.in_slices(get_msg, step=0.01)(timeout=None)) == {"msg": 6}
    assert book.polling_client().__name__ == "PollingClient"

