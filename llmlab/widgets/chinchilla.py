"""The Chinchilla calculator (notebook 03, section 6): a budget in, a compute-optimal plan out.

All arithmetic lives in :mod:`llmlab.scaling` (``flops_from_gpus``, ``flops_from_dollars``,
``plan``); this module only wires built-in ipywidgets (so Colab's ipywidgets 7.7 works) to
:func:`budget_flops` and :func:`report`, which are plain functions the tests call.
"""
from __future__ import annotations

from .. import scaling


def budget_flops(mode: str, flops: float = 1e21, gpu: str = "H100", n_gpus: int = 8,
                 days: float = 7.0, mfu: float = 0.4, dollars: float = 1e5,
                 price: float = 2.5) -> float:
    """The budget in FLOPs, given as ``mode`` = "FLOPs", "GPUs" or "dollars"."""
    if mode == "FLOPs":
        if flops <= 0:
            raise ValueError(f"the budget must be positive, got {flops!r} FLOPs")
        return float(flops)
    if mode == "GPUs":
        return scaling.flops_from_gpus(gpu, n_gpus, days, mfu)
    if mode == "dollars":
        return scaling.flops_from_dollars(dollars, price, gpu, mfu)
    raise ValueError(f"budget mode must be 'FLOPs', 'GPUs' or 'dollars', got {mode!r}")


def _num(x: float) -> str:
    """1.23e+10 -> '12.3B'; plain numbers for small values."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def report(law: scaling.ScalingLaw, flops: float, gpu: str = "H100", n_gpus: int = 8,
           mfu: float = 0.4, size_factor: float = 1.0) -> str:
    """An HTML table of :func:`llmlab.scaling.plan` for the widget (and for a plain cell)."""
    p = scaling.plan(law, flops, gpu=gpu, n_gpus=n_gpus, mfu=mfu, size_factor=size_factor)
    rows = [
        ("budget", f"{flops:.3g} FLOPs = {p['gpu_days']:.3g} {gpu}-days at MFU {mfu:.0%}"),
        ("compute-optimal parameters N", _num(p["n_opt"])),
        ("compute-optimal tokens D", _num(p["d_opt"])),
        ("tokens per parameter", f"{p['tokens_per_param']:.1f}"),
        ("predicted loss (nats/token)", f"{p['loss']:.3f}"),
        ("training time", f"{p['days']:.3g} days on {n_gpus} x {gpu}"),
    ]
    if size_factor < 1:
        match = p["flops_to_match"]
        rows += [
            (f"over-trained: model x{size_factor:.2g}", f"N = {_num(p['n_small'])}, "
             f"D = {_num(p['d_small'])} ({p['tokens_per_param_small']:.0f} tokens/param)"),
            ("its loss", f"{p['loss_small']:.3f} (gives up {p['loss_given_up']:.4f})"),
            ("compute to match the optimal loss",
             "never (below its floor)" if match == float("inf") else f"{match / flops:.2f} x the budget"),
            ("inference cost per token", f"{1 / p['inference_saving']:.2g} x the optimal model's"),
        ]
    body = "".join(f"<tr><td style='text-align:left'>{k}</td><td style='text-align:left'>"
                   f"<b>{v}</b></td></tr>" for k, v in rows)
    return f"<p>fit: <b>{law.name}</b> ({law.source})</p><table>{body}</table>"


def calculator(laws: dict | None = None):
    """The widget: budget mode, budget inputs, fit, over-training factor -> :func:`report`.

    ``laws`` maps a name to a :class:`~llmlab.scaling.ScalingLaw`; default Chinchilla's and
    Epoch's published fits (notebook 03 adds the fit of the learner's own sweep).
    """
    import ipywidgets as W

    laws = laws or {"Chinchilla": scaling.CHINCHILLA, "Epoch AI": scaling.EPOCH}
    style = {"description_width": "140px"}
    # ipywidgets 8 puts a ToggleButtons' own description above its buttons; a label of the rows'
    # width (right-aligned like theirs) beside the buttons lines it up with the labels below
    mode = W.ToggleButtons(options=["FLOPs", "GPUs", "dollars"], value="GPUs",
                           style={"button_width": "90px"})
    mode_label = W.HTML("<div style='text-align:right; padding-right:0'>budget as</div>",
                        layout=W.Layout(width=style["description_width"]))
    flops = W.FloatLogSlider(value=1e21, base=10, min=15, max=27, step=0.1, description="FLOPs", style=style)
    gpu = W.Dropdown(options=list(scaling.GPU_PEAK_FLOPS), value="H100", description="GPU", style=style)
    n_gpus = W.BoundedIntText(value=8, min=1, max=100000, description="GPUs", style=style)
    days = W.BoundedFloatText(value=7.0, min=0.01, max=3650, description="days", style=style)
    mfu = W.FloatSlider(value=0.4, min=0.05, max=1.0, step=0.05, description="MFU", style=style)
    dollars = W.BoundedFloatText(value=1e5, min=1, max=1e10, description="dollars", style=style)
    price = W.BoundedFloatText(value=2.5, min=0.01, max=100, description="$ per GPU-hour", style=style)
    fit = W.Dropdown(options=list(laws), description="fit", style=style)
    shrink = W.FloatLogSlider(value=1.0, base=10, min=-2, max=0, step=0.05,
                              description="model size x", style=style)
    out = W.HTML()

    def update(*_):
        try:
            C = budget_flops(mode.value, flops.value, gpu.value, n_gpus.value, days.value,
                             mfu.value, dollars.value, price.value)
            out.value = report(laws[fit.value], C, gpu.value, n_gpus.value, mfu.value, shrink.value)
        except ValueError as exc:
            out.value = f"<p style='color:#b00'>{exc}</p>"
        flops.layout.display = "" if mode.value == "FLOPs" else "none"
        days.layout.display = "" if mode.value == "GPUs" else "none"
        for w in (dollars, price):
            w.layout.display = "" if mode.value == "dollars" else "none"

    for w in (mode, flops, gpu, n_gpus, days, mfu, dollars, price, fit, shrink):
        w.observe(update, names="value")
    update()
    return W.VBox([W.HBox([mode_label, mode]), W.HBox([W.VBox([flops, gpu, n_gpus, days, mfu, dollars, price]),
                                 W.VBox([fit, shrink])]), out])
