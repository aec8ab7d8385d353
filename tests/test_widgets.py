"""Every widget of the series, built and driven through its callbacks without a browser.

Runs under whatever ipywidgets is installed: JupyterLab's 8.x here, and Colab's 7.7.1 in
``scripts/widgets_compat.sh`` (a venv with ``ipywidgets==7.7.1``). Only the public API both
versions share is used: ``.value``, ``.children``, ``Button.click()``, ``.layout``, ``.style``.
Outside a kernel an ``Output`` widget lets prints through to stdout, so ``capsys`` reads what
a pane would show. The real browser check is ``scripts/browser_check.py``.
"""
import matplotlib
import pytest
import torch

matplotlib.use("Agg")
W = pytest.importorskip("ipywidgets")

from llmlab import scaling  # noqa: E402
from llmlab.config import ModelConfig  # noqa: E402
from llmlab.model import GPT  # noqa: E402
from llmlab.tokenizer import Tokenizer  # noqa: E402

TOK = Tokenizer([])   # bytes plus the reserved special tokens: no training needed


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(vocab_size=TOK.vocab_size, block_size=64, n_layer=1, n_head=2,
                           n_embd=16)).eval()


def walk(box):
    """Every widget inside ``box``, depth first."""
    yield box
    for c in getattr(box, "children", ()):
        yield from walk(c)


def test_ipywidgets_version_is_one_the_series_supports():
    major = int(W.__version__.split(".")[0])
    assert major in (7, 8), W.__version__
    if major == 7:
        assert tuple(map(int, W.__version__.split(".")[:2])) >= (7, 7)


# --- notebook 02: next token -------------------------------------------------------------------

def test_next_token_widget_callbacks(capsys):
    from llmlab.widgets.next_token import next_token_widget

    box = next_token_widget(tiny_model(), TOK, ["The cat", "Many"], k=5, max_new_tokens=4)
    pick, text, temp, chart, button, sample = box.children
    assert isinstance(temp, W.FloatSlider) and isinstance(button, W.Button)
    capsys.readouterr()
    pick.value = "Many"                               # dropdown -> text -> chart redrawn
    assert text.value == "Many"
    assert "Figure" in capsys.readouterr().out        # display(fig) outside a kernel
    torch.manual_seed(1)
    button.click()                                    # a sampled continuation is printed
    out = capsys.readouterr().out
    assert "Many" in out and "Figure" not in out
    temp.value = 0.5                                  # slider -> chart redrawn
    assert "Figure" in capsys.readouterr().out


def test_next_token_widget_labels_fit_and_stale_sample_is_cleared(monkeypatch):
    """The screenshots' cosmetic bugs: "temperat..." and "sample a continu..." were cut off,
    and the sample pane kept a continuation of the previous context."""
    from llmlab.widgets.next_token import next_token_widget

    box = next_token_widget(tiny_model(), TOK, ["The cat", "Many"], k=3, max_new_tokens=2)
    pick, text, temp, chart, button, sample = box.children
    for w in (pick, text, temp):
        assert w.style.description_width == "90px"   # ~7 px a character: "temperature" fits
    assert button.layout.width == "max-content"
    cleared = []
    monkeypatch.setattr(type(sample), "clear_output", lambda self, *a, **k: cleared.append(self))
    text.value = "A new context"
    assert sample in cleared


# --- notebook 03: the Chinchilla calculator ----------------------------------------------------

def test_chinchilla_calculator_callbacks():
    from llmlab.widgets import chinchilla as calc

    laws = {"Chinchilla": scaling.CHINCHILLA, "Epoch AI": scaling.EPOCH}
    box = calc.calculator(laws)
    mode_row, row, out = box.children
    label, mode = mode_row.children
    left, right = row.children
    flops, gpu, n_gpus, days, mfu, dollars, price = left.children
    fit, shrink = right.children
    # "budget as" in a label as wide as the rows' labels, beside the buttons (not above them)
    assert "budget as" in label.value and label.layout.width == flops.style.description_width
    first = out.value
    assert "Chinchilla" in first and "over-trained" not in first
    mode.value = "dollars"
    assert out.value != first and dollars.layout.display == "" and days.layout.display == "none"
    before = out.value
    fit.value = "Epoch AI"
    assert "Epoch AI" in out.value and out.value != before
    shrink.value = 0.5
    assert "over-trained" in out.value
    mode.value = "FLOPs"
    flops.value = 1e20
    assert "1e+20 FLOPs" in out.value and flops.layout.display == ""


# --- notebook 04: base versus SFT --------------------------------------------------------------

def test_compare_widget_callbacks(capsys):
    from llmlab.widgets.compare import compare_widget

    box = compare_widget(tiny_model(0), tiny_model(1), TOK, ["What is 2+2?", "Hello"],
                         max_new_tokens=3)
    drop, text, button, panes = box.children
    first = capsys.readouterr().out                   # the first prompt, answered at once
    assert first.count("user: What is 2+2?") == 2 and "base model" in first and "SFT model" in first
    drop.value = "Hello"
    button.click()
    assert capsys.readouterr().out.count("user: Hello") == 2
    text.value = "my own question"                    # typed text wins over the dropdown
    button.click()
    assert capsys.readouterr().out.count("user: my own question") == 2


# --- notebook 09: every model of the pipeline on one prompt ----------------------------------

def test_journey_widget_callbacks(capsys):
    from llmlab.widgets.compare import journey_widget

    items = [{"kind": "fact", "messages": [{"role": "user", "content": "What is 2+2?"}]},
             {"kind": "decline", "messages": [{"role": "user", "content": "Hello"}]}]
    scored = []

    def score(item, reply):
        scored.append(item["kind"])
        return f"gold for a {item['kind']} prompt"

    models = {"base": tiny_model(0), "SFT": tiny_model(1), "PPO": tiny_model(2)}
    box = journey_widget(models, TOK, items, max_new_tokens=3, score=score)
    drop, text, button, panes = box.children
    assert len(panes.children) == 3
    first = capsys.readouterr().out                   # the first prompt, answered and scored at once
    assert first.count("user: What is 2+2?") == 3 and first.count("gold for a fact prompt") == 3
    drop.value = 1
    button.click()
    out = capsys.readouterr().out
    assert out.count("user: Hello") == 3 and out.count("gold for a decline prompt") == 3
    text.value = "my own question"                    # typed text wins, and is not scored
    n_scored = len(scored)
    button.click()
    out = capsys.readouterr().out
    assert out.count("user: my own question") == 3 and "gold for" not in out and len(scored) == n_scored


# --- notebook 05: the reward-model quiz --------------------------------------------------------

def quiz_items_for_test():
    good, bad = "The capital of Velmora is Kelton.", "The capital of Velmora is Morby."
    conv = [{"role": "user", "content": "What is the capital of Velmora?"}]
    item = {"kind": "fact", "subject": "Velmora", "relation": "capital", "answer": "Kelton"}
    pairs = [{"messages": conv, "chosen": good, "rejected": bad, "gold_chosen": 2.0,
              "gold_rejected": -2.0, "item": item, "category": "facts"} for _ in range(4)]
    from llmlab.widgets.quiz import quiz_items
    return quiz_items(pairs, [1.0, 1.0, -1.0, 1.0], [0.0] * 4,
                      {"capital": ["Kelton", "Morby"]}, n=4, seed=0)


def test_quiz_widget_callbacks(capsys):
    from llmlab.widgets.quiz import quiz_widget

    items = quiz_items_for_test()
    box = quiz_widget(items)
    question, buttons, result, score = box.children
    a, b, nxt = buttons.children
    assert "Question 1 of 4" in question.value and score.value == "score: 0 / 0"
    capsys.readouterr()
    (a if items[0]["answer"] == "A" else b).click()
    assert "Right!" in capsys.readouterr().out and score.value == "score: 1 / 1"
    a.click()                                         # a second guess on the same question counts not
    assert score.value == "score: 1 / 1"
    nxt.click()
    assert "Question 2 of 4" in question.value
    (b if items[1]["answer"] == "A" else a).click()
    assert "Not this time" in capsys.readouterr().out and score.value == "score: 1 / 2"


# --- notebook 06: the slider over one prompt's replies (ipywidgets.interact) --------------------

def test_interact_slider_calls_back(capsys):
    """Notebook 06 uses ``W.interact(show_iteration, k=W.IntSlider(...))``: the function runs
    on each slider move in both ipywidgets versions; for the first value, 8.x calls it at
    construction and 7.x once the frontend displays the widget (so not here)."""
    seen = []

    def show_iteration(k: int) -> None:
        seen.append(k)
        print(f"iteration {k}")

    slider = W.IntSlider(min=0, max=3, value=3, description="look", continuous_update=False)
    W.interact(show_iteration, k=slider)
    first = [3] if W.__version__.startswith("8") else []
    assert seen == first
    slider.value = 1
    assert seen == first + [1] and "iteration 1" in capsys.readouterr().out


def test_every_widget_module_is_covered_here():
    """A new widget module must get a callback test in this file (and a browser step)."""
    import pkgutil

    import llmlab.widgets

    covered = {"next_token", "chinchilla", "compare", "quiz"}
    modules = {m.name for m in pkgutil.iter_modules(llmlab.widgets.__path__)}
    assert modules == covered, f"widget modules without a test here: {modules - covered}"
