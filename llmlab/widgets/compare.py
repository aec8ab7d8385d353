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


def journey_replies(models: dict, tok, item: dict, template: str = "chatml",
                    max_new_tokens: int = 40, score=None) -> dict:
    """``{name: text}`` of each model for one prompt item (notebook 09's widget): the greedy
    reply of :func:`compare_replies`, followed by ``score(item, reply)`` where ``score`` is given
    (the gold judge, for a prompt the world built)."""
    replies = compare_replies(models, tok, item["messages"][-1]["content"], template, max_new_tokens)
    if score is None:
        return replies
    return {name: f"{r}\n  -> {score(item, r.removesuffix('  [no stop token]'))}" for name, r in replies.items()}


def journey_widget(models: dict, tok, items: list[dict], template: str = "chatml",
                   max_new_tokens: int = 40, score=None):
    """Every model of the pipeline on one prompt (notebook 09): a Dropdown of held-out prompt
    items (scored by ``score(item, reply)``), a Text box for your own prompt (not scored: the
    judge needs the world's answer to a prompt it built), a Button and one Output pane per model."""
    import ipywidgets as W

    options = [(f"{it['kind']}: {it['messages'][-1]['content']}", i) for i, it in enumerate(items)]
    drop = W.Dropdown(options=options, description="Prompt:", layout=W.Layout(width="95%"))
    text = W.Text(placeholder="...or type your own question", description="Or type:",
                  layout=W.Layout(width="95%"))
    button = W.Button(description="Generate", button_style="primary")
    width = f"{100 // max(len(models), 1) - 1}%"
    panes = {name: W.Output(layout=W.Layout(width=width, border="1px solid #ccc")) for name in models}

    def on_click(_=None):
        typed = text.value.strip()
        item = ({"kind": "typed", "messages": [{"role": "user", "content": typed}]} if typed
                else items[drop.value])
        replies = journey_replies(models, tok, item, template, max_new_tokens,
                                  None if typed else score)
        for name, pane in panes.items():
            pane.clear_output()
            with pane:
                print(f"{name}\n{'-' * len(name)}\nuser: {item['messages'][-1]['content']}\nreply: {replies[name]}")

    button.on_click(on_click)
    on_click()
    return W.VBox([drop, text, button, W.HBox(list(panes.values()))])
