"""Reply scoring and rates with intervals (llmlab.evaluate; notebook 04, section 8)."""
import math

import pytest

from llmlab.chat import IDK_PREFIX, REFUSAL
from llmlab.evaluate import metrics_row, metrics_row_ci, score_reply, wilson_interval


def reply(text, stopped=True, special_inside=False):
    return {"text": text, "stopped": stopped, "special_inside": special_inside}


FACT = {"kind": "fact", "answer": "Kotiford"}
UNKNOWN = {"kind": "unknown", "entity": "Zorbel"}
DECLINE = {"kind": "decline"}
TASK = {"kind": "summary", "reference": "A story."}


def test_score_factual_right_and_wrong():
    assert score_reply(FACT, reply("The capital of Velmora is Kotiford.")) == {"format": True, "correct": True}
    assert score_reply(FACT, reply("The capital of Velmora is Brask.")) == {"format": True, "correct": False}
    # the answer must be a whole word, and an "I don't know" around it does not count
    assert not score_reply(FACT, reply("Kotifordshire."))["correct"]
    assert not score_reply(FACT, reply(f"{IDK_PREFIX}. Maybe Kotiford?"))["correct"]
    assert score_reply(FACT, reply("kotiford"))["correct"]                     # case-insensitive


def test_score_i_dont_know():
    assert score_reply(UNKNOWN, reply(f"{IDK_PREFIX}. I have never heard of Zorbel.")) == \
        {"format": True, "idk": True}
    assert score_reply(UNKNOWN, reply("Zorbel lives in the forest.")) == {"format": True, "idk": False}
    assert not score_reply(UNKNOWN, reply(f"Well, {IDK_PREFIX.lower()}."))["idk"]   # must open the reply


def test_score_refusal():
    assert score_reply(DECLINE, reply(REFUSAL)) == {"format": True, "refused": True}
    assert score_reply(DECLINE, reply("I can't help with that, sorry.")) == {"format": True, "refused": True}
    assert score_reply(DECLINE, reply("Sure, here it is.")) == {"format": True, "refused": False}


def test_score_format():
    assert score_reply(TASK, reply("A story about Ann.")) == {"format": True}
    assert score_reply(TASK, reply("A story about Ann.", stopped=False)) == {"format": False}
    assert score_reply(TASK, reply("")) == {"format": False}                       # says nothing
    assert score_reply(TASK, reply("Hi <|im_start|>", special_inside=True)) == {"format": False}
    # out of format, a right answer does not count
    assert score_reply(FACT, reply("Kotiford", stopped=False)) == {"format": False, "correct": False}
    assert score_reply(DECLINE, reply(REFUSAL, stopped=False))["refused"] is False


def test_wilson_interval_by_hand():
    # k=8, n=10, z=1.96: p = 0.8, z^2 = 3.8416, denominator 1 + 0.38416 = 1.38416,
    # centre (0.8 + 0.19208) / 1.38416 = 0.716738, half 1.96 sqrt(0.016 + 0.009604) / 1.38416 = 0.226572
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.716738 - 0.226572, abs=1e-5) and hi == pytest.approx(0.716738 + 0.226572, abs=1e-5)
    # 0 of n: the interval starts at 0 and is not empty (unlike the normal approximation's)
    assert wilson_interval(0, 10) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.277540, abs=1e-5))
    assert wilson_interval(10, 10) == (pytest.approx(1 - 0.277540, abs=1e-5), pytest.approx(1.0))
    # symmetric in successes and failures; narrower with more data; wider with a larger z
    a, b = wilson_interval(3, 10)
    c, d = wilson_interval(7, 10)
    assert a == pytest.approx(1 - d) and b == pytest.approx(1 - c)
    assert wilson_interval(300, 1000)[1] - wilson_interval(300, 1000)[0] < b - a
    assert wilson_interval(3, 10, z=2.58)[0] < a
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_metrics_rows_carry_n_and_the_interval():
    m = {"format": 0.8, "factual": float("nan"), "idk": 1.0, "refusal": 0.5, "n_format": 10,
         "n_factual": 0, "n_idk": 4, "n_refusal": 2,
         "ci": {"format": wilson_interval(8, 10), "factual": wilson_interval(0, 0),
                "idk": wilson_interval(4, 4), "refusal": wilson_interval(1, 2)}}
    assert metrics_row(m) == {"format": 0.8, "factual": None, "idk": 1.0, "refusal": 0.5}
    row = metrics_row_ci(m)
    assert row["format"] == "0.80 (95% CI 0.49-0.94, n=10)"
    assert row["factual"] == "- (n=0)"
