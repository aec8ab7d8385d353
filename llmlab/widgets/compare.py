"""Base versus SFT, side by side (notebook 04, section 7).

Choose a held-out prompt from the dropdown (or type your own), press the button, and see the
base model's and the SFT model's greedy replies to the same chat-formatted prompt in two panes.
Built-in ipywidgets only (Dropdown, Text, Button, Output, HBox, VBox), so Colab's 7.7 works.
"""
from __future__ import annotations

from .. import evaluate


def compare_replies(models: dict, tok, prompt: str, template: str = "chatml",
                    max_new_tokens: int = 40) -> dict:
    """``{name: reply}`` of each model for one user prompt (what the widget shows).

    A reply is the model's greedy continuation of the rendered prompt, cut at the template's
    stop token; a model that never stops shows ``[no stop token]`` after its text.
    """
    conv = [{"role": "user", "content": prompt}]
    out = {}
    for name, model in models.items():
        r = evaluate.generate_replies(model, tok, [conv], template, max_new_tokens)[0]
        out[name] = r["text"] + ("" if r["stopped"] else "  [no stop token]")
    return out


def compare_widget(base, tuned, tok, prompts: list[str], template: str = "chatml",
                   max_new_tokens: int = 40):
    """The widget: a Dropdown of ``prompts``, a Text box, a Button and two Output panes."""
    import ipywidgets as W

    drop = W.Dropdown(options=prompts, description="Prompt:", layout=W.Layout(width="95%"))
    text = W.Text(placeholder="...or type your own question", description="Or type:",
                  layout=W.Layout(width="95%"))
    button = W.Button(description="Generate", button_style="primary")
    panes = {"base model": W.Output(layout=W.Layout(width="49%", border="1px solid #ccc")),
             "SFT model": W.Output(layout=W.Layout(width="49%", border="1px solid #ccc"))}

    def on_click(_=None):
        prompt = text.value.strip() or drop.value
        replies = compare_replies({"base model": base, "SFT model": tuned}, tok, prompt,
                                  template, max_new_tokens)
        for name, pane in panes.items():
            pane.clear_output()
            with pane:
                print(f"{name}\n{'-' * len(name)}\nuser: {prompt}\nreply: {replies[name]}")

    button.on_click(on_click)
    on_click()
    return W.VBox([drop, text, button, W.HBox(list(panes.values()))])
