"""Quality rules on crafted inputs, and the hashed n-gram classifier (notebook 01, section 4)."""
import random

import numpy as np

import pytest

from llmlab.data import quality as q

PROSE = ("The river runs to the sea. People in the valley fish and farm with care.\n"
         "They have lived there for a long time, and they like it.")


def test_each_rule_value_by_hand():
    assert q.word_count("one two  three\nfour") == 4
    assert q.mean_word_length("ab, abcd!") == 3.0
    assert q.symbol_ratio("a # b ... c d") == pytest.approx(2 / 6)
    assert q.ellipsis_line_frac("wait...\nok.\nmore…\nend.") == 0.5
    assert q.bullet_line_frac("- a\n* b\nc\n• d") == 0.75
    assert q.alpha_word_frac("abc 123 x1 !!") == 0.5
    assert q.stop_word_count("The cat and THE hat, with a bat") == 4
    assert q.terminal_punct_frac("Done.\nnot done\nReally?\nyes!") == 0.75
    assert q.dup_line_frac("a\nb\na\na") == 0.5
    assert q.top_ngram_char_frac("buy now buy now ok", 2) == pytest.approx(12 / 14)
    assert q.top_ngram_char_frac("a b c d", 2) == 0.0          # nothing repeats
    assert q.dup_ngram_char_frac("a b c a b c", 3) == 1.0
    assert q.dup_ngram_char_frac("a b c d e f", 3) == 0.0


@pytest.mark.parametrize("text, rule", [
    ("Too short.", "min_words"),
    ("Antidisestablishmentarianism-like words everywhere, " * 6, "mean_word_len"),
    ("# tag # tag # the of and to be with that have # here # and # more # stuff.", "symbol_ratio"),
    ("Loading...\nPlease wait...\nThe end of the page is here, with more text to read now.",
     "ellipsis_lines"),
    ("- the item\n- the item two\n- the item three\n- the item four is here now", "bullet_lines"),
    ("123 456 789 000 111 222 333 the and of to 444 555 666.", "alpha_words"),
    ("Cats chase mice. Dogs chase cats. Birds fly high. Fish swim deep. Cows eat grass.",
     "stop_words"),
    ("the cat sat on the mat and then\nthe dog ran to the park with me\nno end here at all",
     "terminal_punct"),
    ("Buy the best wool now with us.\n" * 3 + "A line of the text that is new.", "dup_lines"),
    ("the best the best the best the best of the best the best and the best to be.", "top_2gram"),
    ("we sell the best wool in town and we sell the best wool in town, to be with that.",
     "dup_5gram"),
])
def test_each_rule_fires_on_its_crafted_input(text, rule):
    assert rule in q.rule_failures(text)
    assert q.rule_failures(PROSE) == []


def test_thresholds_are_tunable_and_code_is_exempt():
    text = "Cats chase mice. Dogs chase cats. Birds fly high. Fish swim deep."
    assert "stop_words" in q.rule_failures(text)
    assert "stop_words" not in q.rule_failures(text, q.QualityRules(min_stop_words=0))
    code = "def f(x):\n    return x + 1\nprint(f(2))\nfor i in range(3):\n    print(i)"
    assert "terminal_punct" in q.rule_failures(code)
    assert "terminal_punct" not in q.rule_failures(code, is_code=True)


def test_removal_prf_by_hand():
    r = q.removal_prf([True, True, False, False], [True, False, True, False])
    assert (r["precision"], r["recall"]) == (0.5, 0.5)


def test_hashed_ngrams_are_stable_and_in_range():
    ids = q.hashed_ngrams("The cat sat.", 97)
    assert ids == q.hashed_ngrams("the CAT sat.", 97)
    assert len(ids) == 4 + 3 and all(0 <= i < 97 for i in ids)


def test_classifier_training_improves_and_separates():
    """A short training run: the loss falls, and held-out texts of each class are told apart."""
    rng = random.Random(0)
    good_words = "the river valley people farm fish and with of to sea time long".split()
    bad_words = "cheap buy deal free best online sale click win prize".split()

    def make(words, k):
        return [" ".join(rng.choice(words) for _ in range(25)) + "." for _ in range(k)]

    pos, neg = make(good_words, 60), make(bad_words, 60)
    clf = q.train_classifier(pos, neg, buckets=1 << 12, epochs=6)
    assert clf.history[-1] < 0.5 * clf.history[0]
    s_good, s_bad = clf.score(make(good_words, 20)), clf.score(make(bad_words, 20))
    assert s_good.min() > 0.5 > s_bad.max()
    with pytest.raises(ValueError, match="both classes"):
        q.train_classifier(pos, [])


def _random_texts(k, seed=0):
    rng = random.Random(seed)
    vocab = "the of and to buy cheap river sea people # ... - 123 x1 Antidisestablishment".split()
    out = []
    for _ in range(k):
        lines = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12)))
                 + rng.choice(["", ".", "!", "..."]) for _ in range(rng.randint(1, 5))]
        out.append("\n".join(("- " if rng.random() < 0.2 else "") + l for l in lines))
    return out


def test_failure_matrix_agrees_with_rule_failures():
    """The vectorised checker names exactly the rules the one-text oracle names, for random
    texts and random thresholds, code or not."""
    rng = random.Random(1)
    texts = _random_texts(150)
    is_code = [rng.random() < 0.2 for _ in texts]
    table = q.value_table([q.rule_values(t) for t in texts])
    for _ in range(5):
        rules = q.QualityRules(min_words=rng.randint(0, 12), min_stop_words=rng.randint(0, 3),
                               max_top_2gram=rng.random(), max_dup_5gram=rng.random())
        m = q.failure_matrix(table, is_code, rules)
        for i, t in enumerate(texts):
            names = [r for r, f in zip(q.RULE_ORDER, m[i]) if f]
            assert names == q.rule_failures(t, rules, is_code[i])


def test_tune_rules_by_hand_and_never_worse_than_any_grid_point():
    short_bad = ["Buy now.", "Click here now.", "Free deal."]
    good = [PROSE, "The sea is near the town, and people like to swim in it."]
    texts = short_bad + good
    is_bad = [True] * 3 + [False] * 2
    table = q.value_table([q.rule_values(t) for t in texts])
    grid = {"min_words": (50, 8, 1), "min_stop_words": (2, 0)}
    rules, prf = q.tune_rules(table, [False] * 5, is_bad, grid=grid)
    # Gopher's 50 words removes the good ones too; 8 removes exactly the three short pages
    assert (rules.min_words, prf["precision"], prf["recall"]) == (8, 1.0, 1.0)
    # property: the chosen F1 is the best over the grid
    for mw in grid["min_words"]:
        for ms in grid["min_stop_words"]:
            r = q.removal_prf(q.failure_matrix(
                table, [False] * 5, q.QualityRules(min_words=mw, min_stop_words=ms)).any(1), is_bad)
            f1 = 2 * r["precision"] * r["recall"] / max(r["precision"] + r["recall"], 1e-12)
            assert f1 <= prf["f1"] + 1e-12


def test_wilson_interval_by_hand_and_properties():
    lo, hi = q.wilson_interval(8, 10)               # Wilson (1927); tables give 0.490-0.943
    assert (round(lo, 3), round(hi, 3)) == (0.49, 0.943)
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 500)
        k = rng.randint(0, n)
        lo, hi = q.wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
        lo4, hi4 = q.wilson_interval(4 * k, 4 * n)  # more data, same rate: a narrower interval
        assert hi4 - lo4 < hi - lo
    assert q.format_rate(9, 10) == "0.90 (95% CI 0.60-0.98, n=10)"


def test_pr_curve_and_best_threshold():
    rng = random.Random(2)
    scores = [rng.random() for _ in range(300)]
    is_bad = [s < 0.3 if rng.random() < 0.9 else s > 0.7 for s in scores]
    c = q.pr_curve(scores, is_bad)
    assert (np.diff(c["recall"]) >= 0).all()        # removing more never finds fewer bad ones
    assert c["recall"][-1] == 1.0 and c["recall"][0] == 0.0
    th = q.best_threshold(scores, is_bad)
    assert 0.25 < th < 0.35                          # the bad ones mostly sit below 0.3
