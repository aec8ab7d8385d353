"""Reward-model quiz (notebook 05, section 7): guess which reply the reward model scores higher.

Each question shows a prompt and two replies. Press **A** or **B** for the reply you think the
reward model (RM) scores higher; the answer shows both RM scores, both gold scores and one
line saying why, and a running score counts your hits. Built-in ipywidgets only (HTML,
Button, Output, HBox, VBox), so Colab's 7.7 works. :func:`quiz_table` is the static fallback
for readers whose viewer does not render widgets.
"""
from __future__ import annotations

import html
import random

from .. import prefs


def quiz_items(pairs: list[dict], r_chosen: list[float], r_rejected: list[float], values: dict,
               n: int = 12, seed: int = 0) -> list[dict]:
    """``n`` quiz questions from scored pairs: half where the RM agrees with the gold judge and
    half where it does not (as far as there are such pairs), each with replies in random order.

    Each item: ``prompt``, ``a``, ``b``, ``rm_a``, ``rm_b``, ``gold_a``, ``gold_b``,
    ``answer`` (``"A"`` or ``"B"``: the reply the RM scores higher) and ``explanation``.
    """
    rng = random.Random(seed)
    rows = list(zip(pairs, r_chosen, r_rejected))
    right = [r for r in rows if (r[1] > r[2]) == (r[0]["gold_chosen"] > r[0]["gold_rejected"])]
    wrong = [r for r in rows if r not in right] if len(right) < len(rows) else []
    pick = rng.sample(wrong, min(len(wrong), n // 2))
    pick += rng.sample(right, min(len(right), n - len(pick)))
    rng.shuffle(pick)
    items = []
    for p, rc, rr in pick:
        flip = rng.random() < 0.5
        a, b = (p["rejected"], p["chosen"]) if flip else (p["chosen"], p["rejected"])
        ra, rb = (rr, rc) if flip else (rc, rr)
        ga, gb = (p["gold_rejected"], p["gold_chosen"]) if flip else (p["gold_chosen"], p["gold_rejected"])
        item = dict(p.get("item", {}), messages=p["messages"])
        ca, cb = (prefs.gold_score(item, t, values).case if "kind" in item else "?" for t in (a, b))
        items.append({"prompt": p["messages"][-1]["content"], "a": a, "b": b, "rm_a": ra, "rm_b": rb,
                      "gold_a": ga, "gold_b": gb, "answer": "A" if ra > rb else "B",
                      "category": p.get("category", ""),
                      "explanation": explain(ra, rb, ga, gb, ca, cb)})
    return items


def explain(rm_a: float, rm_b: float, gold_a: float, gold_b: float, case_a: str, case_b: str) -> str:
    """One line: which reply each judge prefers and what the gold judge saw in each.

    >>> explain(1.0, 0.0, 2.0, -2.0, "states the right answer", "states a wrong answer")
    'RM and gold judge agree on A (A: states the right answer; B: states a wrong answer).'
    """
    rm, gold = ("A" if rm_a > rm_b else "B"), ("A" if gold_a > gold_b else "B")
    saw = f"A: {case_a}; B: {case_b}"
    if case_a == case_b:
        saw += "; the gold scores differ by padding or digressions"
    if rm == gold:
        return f"RM and gold judge agree on {rm} ({saw})."
    return f"The RM prefers {rm} but the gold judge prefers {gold} ({saw})."


def quiz_table(items: list[dict]) -> list[dict]:
    """The static fallback: one row per question with the answer and both judges' scores."""
    return [{"prompt": it["prompt"], "A": it["a"], "B": it["b"], "RM scores higher": it["answer"],
             "RM A / B": f"{it['rm_a']:+.2f} / {it['rm_b']:+.2f}",
             "gold A / B": f"{it['gold_a']:+.1f} / {it['gold_b']:+.1f}", "why": it["explanation"]}
            for it in items]


def quiz_widget(items: list[dict]):
    """The widget: one question at a time, buttons A / B / Next and a running score."""
    import ipywidgets as W

    state = {"i": 0, "hits": 0, "answered": 0, "done": False}
    question = W.HTML()
    result = W.Output(layout=W.Layout(border="1px solid #ccc", min_height="3em"))
    score = W.HTML()
    buttons = {k: W.Button(description=f"{k} scores higher", button_style="primary") for k in "AB"}
    nxt = W.Button(description="Next question")

    def show():
        it = items[state["i"] % len(items)]
        state["done"] = False
        question.value = (f"<b>Question {state['i'] % len(items) + 1} of {len(items)}</b> "
                          f"({html.escape(it['category'])})<br><b>Prompt:</b> {html.escape(it['prompt'])}"
                          f"<br><b>A:</b> {html.escape(it['a'])}<br><b>B:</b> {html.escape(it['b'])}")
        result.clear_output()
        score.value = f"score: {state['hits']} / {state['answered']}"

    def guess(choice):
        if state["done"]:
            return
        it = items[state["i"] % len(items)]
        state["done"] = True
        state["answered"] += 1
        hit = choice == it["answer"]
        state["hits"] += hit
        with result:
            print(("Right! " if hit else "Not this time. ") + f"The RM scores {it['answer']} higher.")
            print(f"RM:   A {it['rm_a']:+.2f}   B {it['rm_b']:+.2f}")
            print(f"gold: A {it['gold_a']:+.1f}   B {it['gold_b']:+.1f}")
            print(it["explanation"])
        score.value = f"score: {state['hits']} / {state['answered']}"

    def next_q(_=None):
        state["i"] += 1
        show()

    for k, b in buttons.items():
        b.on_click(lambda _=None, k=k: guess(k))
    nxt.on_click(next_q)
    show()
    return W.VBox([question, W.HBox([buttons["A"], buttons["B"], nxt]), result, score])
