"""Notebook helpers: the setup every notebook runs, showing the package's real code, figures.

Every notebook starts with the same two cells (notebook 00, "Notebook conventions"):

1. an install cell that works in JupyterLab and on Colab (on Colab it installs llmlab from
   its repository if missing, leaving Colab's preinstalled torch alone);
2. ``preset = llmlab.nb.setup()``: picks the preset, seeds everything, prints the device and
   sets compact figure defaults.

``show(fn)`` prints the source of a package function, so a notebook teaches the code that
actually runs instead of a pasted copy that could drift.
"""
from __future__ import annotations

import inspect

from .config import Preset, get_preset
from .device import choose_precision, pick_device, seed_everything


def setup(preset: str | None = None, seed: int = 0, quiet: bool = False) -> Preset:
    """Choose the preset, seed everything, set figure defaults; print what was chosen."""
    import matplotlib

    p = get_preset(preset)
    seed_everything(seed)
    matplotlib.rcParams.update({
        "figure.figsize": (6.4, 3.4), "figure.dpi": 100, "savefig.dpi": 100,
        "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
        "axes.spines.right": False, "font.size": 10, "figure.autolayout": True,
    })
    _retina_figures()
    if not quiet:
        dev = pick_device()
        print(f"preset: {p.name} | device: {dev.type} | precision: {choose_precision(dev).name}")
    return p


def _retina_figures() -> None:
    """Inline figures as PNGs with twice the pixels of their displayed size, so they stay
    sharp on high-DPI screens (a no-op outside an IPython kernel)."""
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


def source(obj) -> str:
    """The source code of a function or class of the package."""
    return inspect.getsource(obj)


def show(*objs) -> None:
    """Display the real source of package functions or classes, syntax-highlighted."""
    from IPython.display import Code, display

    for obj in objs:
        mod = getattr(obj, "__module__", "")
        display(Code(f"# {mod}.{obj.__qualname__}\n" + source(obj), language="python"))
