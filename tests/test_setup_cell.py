"""The first cell of every notebook, executed as Colab and as a local checkout would run it.

Colab: llmlab is missing, so the cell installs it from the repository with pip's default
upgrade strategy (only what is needed: Colab's torch and ipywidgets 7.7.1 satisfy the ranges
and stay), and the next cell's ``nb.setup()`` picks the gpu preset on a GPU runtime. Locally
(llmlab installed by ``pip install -e ".[dev]"``) the cell runs nothing.
"""
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def first_code_cell(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def run_cell(src: str, monkeypatch, llmlab_present: bool) -> list:
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real(name, *a) if llmlab_present or name != "llmlab"
                                          else None))
    exec(compile(src, "<setup cell>", "exec"), {})
    return calls


def test_every_notebook_has_the_same_setup_cell():
    cells = {first_code_cell(p) for p in NOTEBOOKS}
    assert len(cells) == 1, "the notebooks' first cells differ"


@pytest.mark.parametrize("path", NOTEBOOKS[:1], ids=lambda p: p.stem)
def test_local_checkout_runs_nothing(path, monkeypatch):
    assert importlib.util.find_spec("llmlab") is not None
    assert run_cell(first_code_cell(path), monkeypatch, llmlab_present=True) == []


@pytest.mark.parametrize("path", NOTEBOOKS[:1], ids=lambda p: p.stem)
def test_colab_installs_llmlab_and_keeps_its_packages(path, monkeypatch):
    calls = run_cell(first_code_cell(path), monkeypatch, llmlab_present=False)
    assert len(calls) == 1
    cmd, kw = calls[0]
    assert cmd[1:4] == ["-m", "pip", "install"] and kw.get("check") is True
    target = [a for a in cmd[4:] if not a.startswith("-")]
    assert len(target) == 1 and target[0].startswith("git+https://") and "[" not in target[0], \
        "llmlab alone: no extra (the lab extra would bring JupyterLab and ipywidgets 8)"
    assert not {"-U", "--upgrade", "--force-reinstall", "--upgrade-strategy"} & set(cmd), \
        "an upgrade would replace Colab's CUDA torch and its ipywidgets 7.7.1"


def test_gpu_runtime_picks_the_gpu_preset(monkeypatch):
    import torch

    from llmlab.config import get_preset

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_preset().name == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_preset().name == "cpu"
