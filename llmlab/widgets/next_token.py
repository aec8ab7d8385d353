"""The next-token demo of notebook 02 ("What does the model predict next?").

Pick a context (or type one), see the model's top-k next tokens as a bar chart, move the
temperature slider to reshape the distribution, and press the button to sample a
continuation. Built-in ipywidgets only (Dropdown, Text, FloatSlider, Button, Output), so it
runs on Colab's ipywidgets 7.7 as well as JupyterLab's 8.
"""
from __future__ import annotations

import torch

from ..generate import generate
from ..probes import top_next_tokens


def plot_top_k(top: list, context: str, temperature: float, ax=None):
    """A horizontal bar chart of ``top`` = [(token, prob)] (most probable at the top)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 0.28 * len(top) + 1.2))
    labels = [repr(t) for t, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    ax.barh(labels, probs, color="tab:blue")
    ax.set_xlim(0, 1)
    short = context if len(context) <= 45 else "..." + context[-42:]
    ax.set(title=f"Next token after {short!r} (T = {temperature:.2f})",
           xlabel="probability", ylabel="token")
    return ax


def sample_continuation(model, tokenizer, text: str, temperature: float, max_new_tokens: int = 30,
                        top_k: int | None = None, seed: int | None = None) -> str:
    """A sampled continuation of ``text`` (stops at end of text)."""
    ids = ([tokenizer.eot_id] + tokenizer.encode_ordinary(text))[-model.config.block_size:]
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed if seed is not None else torch.seed() % 2**31)
    out = generate(model, torch.tensor([ids], device=dev), max_new_tokens,
                   temperature=temperature, top_k=top_k, eot_id=tokenizer.eot_id, generator=gen)
    new = [t for t in out[0, len(ids):].tolist() if t != tokenizer.eot_id]
    return tokenizer.decode(new)


def next_token_widget(model, tokenizer, contexts: list[str], k: int = 10,
                      max_new_tokens: int = 30):
    """The interactive demo: returns an ipywidgets VBox (display it as a cell's last line)."""
    import matplotlib.pyplot as plt
    import ipywidgets as W
    from IPython.display import display

    if not contexts:
        raise ValueError("next_token_widget needs at least one context")
    # one label width for all three rows, wide enough for "temperature" (the default 80px cut it)
    style = {"description_width": "90px"}
    pick = W.Dropdown(options=list(contexts), value=contexts[0], description="context", style=style)
    text = W.Text(value=contexts[0], description="text", style=style, layout=W.Layout(width="95%"))
    temp = W.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.05, description="temperature",
                         continuous_update=False, style=style, layout=W.Layout(width="500px"))
    # as wide as its text (the default fixed width cut it; "auto" would stretch it across the box)
    button = W.Button(description="sample a continuation", layout=W.Layout(width="max-content"))
    chart, sample = W.Output(), W.Output()

    def redraw(*_):
        sample.clear_output()   # a continuation of the old context or temperature is stale
        top = top_next_tokens(model, tokenizer, text.value, k=k, temperature=temp.value)
        with chart:
            chart.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6.0, 0.28 * k + 1.2))
            plot_top_k(top, text.value, temp.value, ax)
            display(fig)
            plt.close(fig)

    def on_pick(change):
        text.value = change["new"]          # triggers redraw through the text observer

    def on_sample(_):
        cont = sample_continuation(model, tokenizer, text.value, temp.value, max_new_tokens)
        with sample:
            sample.clear_output()
            print(text.value + cont)

    pick.observe(on_pick, names="value")
    text.observe(redraw, names="value")
    temp.observe(redraw, names="value")
    button.on_click(on_sample)
    redraw()
    return W.VBox([pick, text, temp, chart, button, sample])
