"""Reply scoring and rates with intervals (llmlab.evaluate; notebook 04, section 8)."""
import math

import pytest

from llmlab.chat import IDK_PREFIX, REFUSAL
from llmlab.evaluate import (compare, diff_interval, fmt_share, metrics_row, metrics_row_ci, polite_ok,
                             score_reply, share, share_difference, summary_ok, wilson_interval)


def reply(text, stopped=True, special_inside=False):
    return {"text": text, "stopped": stopped, "special_inside": special_inside}


FACT = {"kind": "fact", "answer": "Kotiford"}
UNKNOWN = {"kind": "unknown", "entity": "Zorbel"}
DECLINE = {"kind": "decline"}
TASK = {"kind": "summary", "reference": "A story."}
SUMMARY = {"kind": "summary", "reference": "Ivo Quinzel meets a frostfox.",
           "key_entities": ["Ivo Quinzel", "frostfox"], "source_chars": 120}
POLITE = {"kind": "polite", "names": ["Velmora"], "content_words": ["capital"]}


def test_score_factual_right_and_wrong():
    assert score_reply(FACT, reply("The capital of Velmora is Kotiford.")) == \
        {"format": True, "correct": True, "correct_any_form": True, "wrong": False}
    assert score_reply(FACT, reply("The capital of Velmora is Brask.")) == \
        {"format": True, "correct": False, "correct_any_form": False, "wrong": True}
    # the answer must be a whole word, and an "I don't know" around it does not count
    assert not score_reply(FACT, reply("Kotifordshire."))["correct"]
    assert not score_reply(FACT, reply(f"{IDK_PREFIX}. Maybe Kotiford?"))["correct"]
    assert score_reply(FACT, reply("kotiford"))["correct"]                     # case-insensitive


def test_score_any_form_separates_knowledge_from_format():
    # the base model's way: the answer inside a continuation that never stops
    rambling = reply("The capital of Velmora is Kotiford. The road was long, so she", stopped=False)
    assert score_reply(FACT, rambling) == {"format": False, "correct": False,
                                           "correct_any_form": True, "wrong": False}
    # a template marker inside breaks the format, not the knowledge
    marked = reply("Kotiford<|im_start|>user", special_inside=True)
    assert score_reply(FACT, marked)["correct_any_form"] and not score_reply(FACT, marked)["correct"]
    # still a whole word, and not an "I don't know"
    assert not score_reply(FACT, reply("Kotifordshire is far.", stopped=False))["correct_any_form"]
    assert not score_reply(FACT, reply(f"{IDK_PREFIX}. Kotiford?", stopped=False))["correct_any_form"]
    # the distractor control: the same test with a wrong object of the relation
    s = score_reply(FACT | {"distractor": "Brask"}, reply("Brask and Kotiford", stopped=False))
    assert s["correct_any_form"] and s["distractor_any_form"]
    assert not score_reply(FACT | {"distractor": "Brask"}, reply("Kotiford."))["distractor_any_form"]


def test_score_i_dont_know():
    assert score_reply(UNKNOWN, reply(f"{IDK_PREFIX}. I have never heard of Zorbel.")) == \
        {"format": True, "idk": True, "hallucinated": False}
    assert score_reply(UNKNOWN, reply("Zorbel lives in the forest.")) == \
        {"format": True, "idk": False, "hallucinated": True}
    assert not score_reply(UNKNOWN, reply(f"Well, {IDK_PREFIX.lower()}."))["idk"]   # must open the reply
    assert not score_reply(UNKNOWN, reply(f"Well, {IDK_PREFIX.lower()}."))["hallucinated"]


def test_score_refusal():
    assert score_reply(DECLINE, reply(REFUSAL)) == {"format": True, "refused": True,
                                                    "partial_refusal": False}
    assert score_reply(DECLINE, reply("I can't help with that, sorry.")) == \
        {"format": True, "refused": True, "partial_refusal": True}
    assert score_reply(DECLINE, reply("Sure, here it is.")) == \
        {"format": True, "refused": False, "partial_refusal": False}
    assert score_reply(DECLINE, reply(REFUSAL + " Cato was born in Loand."))["partial_refusal"]


def test_summary_check_by_hand():
    assert summary_ok("Ivo Quinzel meets a frostfox.", ["Ivo Quinzel", "frostfox"], 120)
    assert not summary_ok("Ivo Quinzel meets a sunowl.", ["Ivo Quinzel", "frostfox"], 120)
    assert not summary_ok("Ivo Morlo meets a frostfox.", ["Ivo Quinzel", "frostfox"], 120)
    assert not summary_ok("Ivo Quinzel meets a frostfox. " * 5, ["Ivo Quinzel", "frostfox"], 120)  # not shorter
    assert not summary_ok("Ivo Quinzelson meets a frostfox.", ["Ivo Quinzel", "frostfox"], 120)  # whole words
    assert summary_ok("A story about someone.", [], 120) and not summary_ok("", [], 120)
    assert score_reply(SUMMARY, reply("Ivo Quinzel meets a frostfox.")) == {"format": True, "summary_ok": True}
    assert score_reply(SUMMARY, reply("Ivo Quinzel meets a frostfox.", stopped=False))["summary_ok"] is False


def test_polite_check_by_hand():
    good = "Could you please tell me the capital of Velmora? Thank you."
    assert polite_ok(good, ["Velmora"], ["capital"])
    assert not polite_ok(good.replace("Velmora", "Brask"), ["Velmora"], ["capital"])     # swapped name
    assert not polite_ok(good.replace("capital", "climate"), ["Velmora"], ["capital"])   # other question
    assert not polite_ok("Tell me the capital of Velmora.", ["Velmora"], ["capital"])    # not polite
    assert not polite_ok("Please tell me the capital of Velmora right now.", ["Velmora"], ["capital"])
    assert not polite_ok("Please, the capital of Velmora. Fast.", ["Velmora"], ["capital"])
    assert polite_ok("Please tell me the capital of Velmora, breakfast aside.", ["Velmora"], ["capital"])
    s = score_reply(POLITE, reply(good.replace("Velmora", "Brask")))
    assert s == {"format": True, "polite_ok": False, "names_kept": False}


def test_difference_interval_by_hand():
    # Wilson(8, 10) = (0.4902, 0.9433), Wilson(2, 10) = (0.0567, 0.5098), d = 0.6:
    # 0.6 - sqrt(0.3098^2 + 0.3098^2) = 0.1618; 0.6 + sqrt(0.1433^2 + 0.1433^2) = 0.8027
    lo, hi = diff_interval(8, 10, 2, 10)
    assert lo == pytest.approx(0.1618, abs=1e-3) and hi == pytest.approx(0.8027, abs=1e-3)
    lo, hi = diff_interval(6, 10, 7, 10)
    assert lo < 0 < hi                                   # 0.6 vs 0.7 on ten prompts: unresolved
    lo, hi = diff_interval(600, 1000, 700, 1000)
    assert hi < 0                                        # the same rates on a thousand: resolved
    a = {"refusal": 0.6, "n_refusal": 10, "k_refusal": 6}
    b = {"refusal": 0.7, "n_refusal": 10, "k_refusal": 7}
    row = compare(a, b, ("a", "b"))["refusal"]
    assert row["resolved"] is False and row["a"].startswith("0.60 (95% CI")


def test_score_format():
    assert score_reply(TASK, reply("A story about Ann.")) == {"format": True}   # no ground truth: format only
    assert score_reply(TASK, reply("A story about Ann.", stopped=False)) == {"format": False}
    assert score_reply(TASK, reply("")) == {"format": False}                       # says nothing
    assert score_reply(TASK, reply("Hi <|im_start|>", special_inside=True)) == {"format": False}
    # out of format, a right answer does not count
    assert score_reply(FACT, reply("Kotiford", stopped=False))["correct"] is False
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


def test_clustered_share_is_never_narrower_than_its_replies_allow():
    # every prompt decides all its replies alike: 4 replies per prompt inform like about 1
    together = share(20, 40, [(4, 4)] * 5 + [(0, 4)] * 5)
    alone = share(20, 40)
    assert together["n_eff"] < 12 and alone["n_eff"] == 40
    assert together["ci"][1] - together["ci"][0] > alone["ci"][1] - alone["ci"][0]
    # replies that vary within prompts as much as between them: no design effect
    mixed = share(20, 40, [(2, 4)] * 10)
    assert mixed["n_eff"] == 40
    # no spread to estimate from: no design effect, as for a share one reply away from it
    none = share(0, 40, [(0, 4)] * 10)
    one = share(1, 40, [(1, 4)] + [(0, 4)] * 9)
    assert none["n_eff"] == 40 and one["n_eff"] == pytest.approx(40, rel=0.15)
    assert none["ci"][1] < one["ci"][1]
    # the interval of a difference uses the effective sizes
    lo, hi = share_difference(share(36, 40, [(4, 4)] * 9 + [(0, 4)]), together)
    lo1, hi1 = share_difference(share(36, 40), alone)
    assert lo < lo1 and hi > hi1


def test_fmt_share_names_both_counts_only_when_they_differ():
    assert fmt_share(share(8, 10)) == "0.80 (95% CI 0.49-0.94, n=10)"
    s = share(20, 40, [(4, 4)] * 5 + [(0, 4)] * 5)
    assert fmt_share(s).endswith("n=40 replies to 10 prompts)")
    assert fmt_share(s, 3, "pairs on").startswith("0.500 (95% CI 0.") and "n=40 pairs on 10 prompts" in fmt_share(s, 3, "pairs on")
