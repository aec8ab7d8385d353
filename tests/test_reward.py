"""Tests of notebook 05's reward model (llmlab.reward): the Bradley-Terry loss by hand, the head
read at the reply's last token, a short training run, and the metrics against references."""
import math
import random
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab import prefs, reward, sft, stages
from llmlab.config import ModelConfig, TrainConfig
from llmlab.device import seed_everything
from llmlab.model import GPT, ScalarModel
from llmlab.tokenizer import Tokenizer

BYTES = Tokenizer([])     # one token per byte plus the reserved special tokens
TINY = ModelConfig(vocab_size=BYTES.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=32)


# --------------------------------------------------------------------------------------------
# The Bradley-Terry loss
# --------------------------------------------------------------------------------------------


def test_bt_loss_by_hand():
    # pair 1: margin 1 -> log(1 + e^-1) = 0.313262; pair 2: margin -1 -> log(1 + e^1) = 1.313262
    r_w, r_l = torch.tensor([2.0, 0.0], requires_grad=True), torch.tensor([1.0, 1.0])
    loss = reward.bt_loss(r_w, r_l)
    assert loss.item() == pytest.approx((0.313262 + 1.313262) / 2, abs=1e-5)
    loss.backward()
    # d loss / d r_w = -(1 - sigmoid(margin)) / B
    s = 1 / (1 + math.exp(-1))
    assert r_w.grad.tolist() == pytest.approx([-(1 - s) / 2, -(1 - (1 - s)) / 2], abs=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), min_size=1, max_size=20))
def test_bt_loss_matches_the_formula_written_out(rows):
    """Property: equals mean(log(1 + exp(-(r_w - r_l)))), computed stably in float64."""
    r_w = torch.tensor([a for a, _ in rows], dtype=torch.float64)
    r_l = torch.tensor([b for _, b in rows], dtype=torch.float64)
    d = (r_w - r_l).tolist()
    expected = sum(max(-x, 0) + math.log1p(math.exp(-abs(x))) for x in d) / len(d)
    assert reward.bt_loss(r_w, r_l).item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_bt_loss_is_symmetric_at_zero_margin():
    assert reward.bt_loss(torch.zeros(5), torch.zeros(5)).item() == pytest.approx(math.log(2))


# --------------------------------------------------------------------------------------------
# The head reads the reply's last token
# --------------------------------------------------------------------------------------------

CONV = [{"role": "user", "content": "What is the capital of Velmora?"}]


def test_encode_reply_ends_at_the_stop_token():
    ids, last = reward.encode_reply(CONV, "Kelton.", BYTES)
    assert last == len(ids) - 1
    assert ids[last] == BYTES.special_tokens["<|im_end|>"]
    assert BYTES.decode(ids[last - 7:last]) == "Kelton."


@pytest.fixture
def tiny_rm():
    torch.manual_seed(0)
    return ScalarModel(GPT(TINY)).eval()


def test_padding_on_either_side_of_a_pair_gives_the_same_score(tiny_rm):
    """Score a reply alone, then in a batch where its partner is longer (so it is padded) and
    where it is the longer one (so the partner is padded): the same number each time."""
    short = {"messages": CONV, "chosen": "Kelton.", "rejected": "The capital of Velmora is Morby, "
             "I hope this helps and let me know if you need anything else."}
    enc = reward.encode_pair(short, BYTES, "chatml", 256)
    flipped = {"messages": CONV, "chosen": short["rejected"], "rejected": short["chosen"]}
    enc_f = reward.encode_pair(flipped, BYTES, "chatml", 256)
    alone = [reward.score_sequences(tiny_rm, [enc[k]], [enc[k + "_last"]], BYTES.pad_id)[0]
             for k in ("chosen", "rejected")]
    b = reward.collate_pairs([enc], BYTES.pad_id)
    b_f = reward.collate_pairs([enc_f], BYTES.pad_id)
    with torch.no_grad():
        r = reward.rewards_at(tiny_rm, b["idx"][0], b["last"][0]).tolist()
        r_f = reward.rewards_at(tiny_rm, b_f["idx"][0], b_f["last"][0]).tolist()
    assert b["idx"].shape[2] == len(enc["rejected"]) > len(enc["chosen"])   # chosen row is padded
    assert r == pytest.approx(alone, abs=1e-5)
    assert r_f == pytest.approx(alone[::-1], abs=1e-5)
    # more padding than needed changes nothing either
    wide = reward.pad_right([enc["chosen"], [1] * 200], BYTES.pad_id)
    with torch.no_grad():
        r_wide = reward.rewards_at(tiny_rm, wide, torch.tensor([enc["chosen_last"], 199]))[0].item()
    assert r_wide == pytest.approx(alone[0], abs=1e-5)


def test_head_reads_the_last_reply_token_not_the_last_position(tiny_rm):
    ids, last = reward.encode_reply(CONV, "Kelton.", BYTES)
    x = torch.tensor([ids + [BYTES.pad_id] * 3])
    at = torch.tensor([last])
    with torch.no_grad():
        base = reward.rewards_at(tiny_rm, x, at).item()
        after = x.clone()
        after[0, last + 1:] = 7                       # tokens after the reply's end: no effect
        assert reward.rewards_at(tiny_rm, after, at).item() == pytest.approx(base, abs=1e-5)
        changed = x.clone()
        changed[0, last - 2] = 9                      # a token of the reply itself: an effect
        assert reward.rewards_at(tiny_rm, changed, at).item() != pytest.approx(base, abs=1e-5)


def test_reward_loss_metrics(tiny_rm):
    pairs = [{"messages": CONV, "chosen": "Kelton.", "rejected": "Morby."}] * 3
    enc, _ = reward.encode_pairs(pairs, BYTES, "chatml", 256)
    loss, m = reward.reward_loss(tiny_rm, reward.collate_pairs(enc, BYTES.pad_id))
    r_w, r_l = reward.score_pairs(tiny_rm, enc, BYTES.pad_id)
    assert loss.item() == pytest.approx(reward.bt_loss(torch.tensor(r_w), torch.tensor(r_l)).item(), abs=1e-5)
    assert m["accuracy"] == float(r_w[0] > r_l[0]) and set(m) == {"accuracy", "margin"}


# --------------------------------------------------------------------------------------------
# The likelihood reward model: head + a * log p(reply | prompt)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_lrm():
    torch.manual_seed(0)
    return reward.LikelihoodRewardModel(GPT(TINY), likelihood_weight=0.3).eval()


def test_encode_reply_span_marks_the_reply_and_its_stop_token():
    ids, first, last = reward.encode_reply_span(CONV, "Kelton.", BYTES)
    assert (ids, last) == reward.encode_reply(CONV, "Kelton.", BYTES)
    assert BYTES.decode(ids[first:last]) == "Kelton." and ids[last] == BYTES.special_tokens["<|im_end|>"]


def test_likelihood_reward_is_the_head_plus_the_weighted_reply_logprob_by_hand(tiny_lrm):
    ids, first, last = reward.encode_reply_span(CONV, "Kelton.", BYTES)
    x = torch.tensor([ids])
    with torch.no_grad():
        r = reward.rewards_at(tiny_lrm, x, torch.tensor([last]), torch.tensor([first])).item()
        head = tiny_lrm.head(tiny_lrm.body.body(x))[0, last, 0].item()
        logits, _ = tiny_lrm.body(x)
        logp = torch.log_softmax(logits[0], -1)
        by_hand = sum(logp[t - 1, ids[t]].item() for t in range(first, last + 1))  # reply tokens only
    assert r == pytest.approx(head + 0.3 * by_hand, abs=1e-4)


def test_likelihood_reward_ignores_padding_and_needs_the_reply_start(tiny_lrm):
    short = {"messages": CONV, "chosen": "Kelton.", "rejected": "The capital of Velmora is Morby, I think."}
    enc = reward.encode_pair(short, BYTES, "chatml", 256)
    alone = reward.score_sequences(tiny_lrm, [enc["chosen"]], [enc["chosen_last"]], BYTES.pad_id,
                                   firsts=[enc["chosen_first"]])[0]
    assert reward.score_pairs(tiny_lrm, [enc], BYTES.pad_id)[0][0] == pytest.approx(alone, abs=1e-4)
    b = reward.collate_pairs([enc], BYTES.pad_id)                 # chosen row right-padded
    with pytest.raises(ValueError, match="first"):
        reward.rewards_at(tiny_lrm, b["idx"][0], b["last"][0])
    loss, _ = reward.reward_loss(tiny_lrm, b)
    loss.backward()
    assert tiny_lrm.likelihood_weight.grad is not None and tiny_lrm.likelihood_weight.grad != 0


def test_pair_parts_add_up_to_the_reward_and_the_likelihood_part_is_the_lm_alone(tiny_lrm):
    pairs = [{"messages": CONV, "chosen": "Kelton.", "rejected": "The capital of Velmora is Morby, I think."},
             {"messages": CONV, "chosen": "I don't know.", "rejected": "Morby."}]
    enc = [reward.encode_pair(q, BYTES, "chatml", 256) for q in pairs]
    parts = reward.pair_parts(tiny_lrm, enc, BYTES.pad_id)
    r_w, r_l = reward.score_pairs(tiny_lrm, enc, BYTES.pad_id)
    for side, total in ((0, r_w), (1, r_l)):
        assert [h + l for h, l in zip(parts["head"][side], parts["likelihood"][side])] == pytest.approx(total, abs=1e-4)
    lp_w, lp_l = reward.likelihood_pairs(tiny_lrm.body, enc, BYTES.pad_id)
    assert parts["likelihood"][0] == pytest.approx([0.3 * x for x in lp_w], abs=1e-4)
    assert parts["likelihood"][1] == pytest.approx([0.3 * x for x in lp_l], abs=1e-4)
    with pytest.raises(TypeError, match="head alone"):
        reward.pair_parts(ScalarModel(GPT(TINY), kind="reward"), enc, BYTES.pad_id)


def test_likelihood_reward_model_saves_and_loads_as_its_own_class(tiny_lrm, tmp_path):
    from llmlab.train import save_checkpoint

    save_checkpoint(tmp_path / "rm.pt", tiny_lrm)
    back = reward.load_reward_model(tmp_path / "rm.pt").eval()
    assert isinstance(back, reward.LikelihoodRewardModel)
    assert back.likelihood_weight.item() == pytest.approx(0.3)
    save_checkpoint(tmp_path / "head.pt", ScalarModel(GPT(TINY)))
    assert type(reward.load_reward_model(tmp_path / "head.pt")) is ScalarModel
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        reward.load_reward_model(tmp_path / "bad.pt")


def test_likelihood_pairs_rank_by_the_language_model_alone():
    """A model whose language-model head is trained to say "Kelton." after the question ranks
    that reply above "Morby."; the ranking comes from log p(reply | prompt) and nothing else."""
    torch.manual_seed(0)
    lm = GPT(TINY)
    ids, first, last = reward.encode_reply_span(CONV, "Kelton.", BYTES)
    x = torch.tensor([ids])
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    tgt = torch.full_like(x, -100)
    tgt[0, first - 1:last] = x[0, first:last + 1]
    for _ in range(60):
        opt.zero_grad()
        lm(x, tgt)[1].backward()
        opt.step()
    enc = reward.encode_pair({"messages": CONV, "chosen": "Kelton.", "rejected": "Morby."}, BYTES, "chatml", 256)
    lc, lr_ = reward.likelihood_pairs(lm, [enc], BYTES.pad_id)
    assert lc[0] > lr_[0]
    with torch.no_grad():
        assert lc[0] == pytest.approx(reward.reply_logprob(lm(x)[0], x, torch.tensor([first]),
                                                           torch.tensor([last])).item(), abs=1e-4)


# --------------------------------------------------------------------------------------------
# A short training run beats chance on held-out pairs
# --------------------------------------------------------------------------------------------


def test_short_training_run_beats_chance_on_heldout_pairs():
    seed_everything(0)
    w = stages.get_world("smoke")
    split = sft.split_world(w, 0.25, 0)
    mix = {"declines": 1, "unknowns": 1, "padding": 1}
    train = prefs.make_pairs(w, split, 600, mix, 0.0, 0, eval_side=False)
    val = prefs.make_pairs(w, split, 150, mix, 0.0, 1, eval_side=True)
    train_enc, _ = reward.encode_pairs(train, BYTES, "chatml", 256)
    val_enc, _ = reward.encode_pairs(val, BYTES, "chatml", 256)
    model = reward.reward_model_from(None, TINY)
    before = reward.pair_accuracy(*reward.score_pairs(model, val_enc, BYTES.pad_id))
    rc = type("RC", (), dict(lr=1e-3, max_steps=120, batch_size=16, warmup_steps=10,
                             weight_decay=0.0, eval_every=60, eval_batches=2, seed=0))
    cfg = reward.reward_train_config(rc, TrainConfig())
    res = reward.train_reward_model(model, train_enc, val_enc, cfg, BYTES.pad_id, "cpu", progress=False)
    k, n = reward.pair_accuracy(*reward.score_pairs(model, val_enc, BYTES.pad_id))
    assert res.steps == 120 and n == len(val_enc) >= 100
    assert reward.wilson_interval(k, n)[0] > 0.75, (before, k, n)
    assert res.train_losses[-1] < res.train_losses[0]


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def test_wilson_against_the_formula_and_edges():
    lo, hi = reward.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = reward.wilson_interval(50, 100)
    assert (lo + hi) / 2 == pytest.approx(0.5) and hi - lo == pytest.approx(0.1923, abs=1e-3)
    assert all(math.isnan(x) for x in reward.wilson_interval(0, 0))


def test_pair_share_counts_prompts_not_pairs():
    def pairs(prompts):
        return [{"messages": [{"role": "user", "content": q}]} for q in prompts]

    # ten prompts with four pairs each, every prompt all right or all wrong: about ten verdicts
    ps = pairs([str(i) for i in range(10) for _ in range(4)])
    together = reward.pair_share([i < 20 for i in range(40)], ps)
    assert together["prompts"] == 10 and together["n"] == 40 and together["n_eff"] < 12
    # the same hits on forty distinct prompts: forty verdicts, a narrower interval
    alone = reward.pair_share([i < 20 for i in range(40)], pairs([str(i) for i in range(40)]))
    assert alone["n_eff"] == 40 and alone["ci"][1] - alone["ci"][0] < together["ci"][1] - together["ci"][0]
    assert together["rate"] == alone["rate"] == 0.5
    # a multi-turn conversation is one prompt only with the same turns
    two = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": x}]} for x in "bc"]
    assert reward.pair_share([True, False], two)["prompts"] == 2


def test_accuracy_where_selects_pairs_and_takes_their_own_ceiling():
    def pair(q, g_w, g_l, cat):
        return {"messages": [{"role": "user", "content": q}], "gold_chosen": g_w, "gold_rejected": g_l,
                "category": cat}
    ev = {"pairs": [pair("a", 2, 0, "x"), pair("b", 0, 2, "x"), pair("c", 2, -2, "y")],
          "r_chosen": [1.0, 1.0, 0.0], "r_rejected": [0.0, 0.0, 1.0]}
    xs = reward.accuracy_where(ev, lambda q: q["category"] == "x", 1.0)
    assert (xs["k"], xs["n"], xs["prompts"]) == (2, 2, 2)
    # |gold difference| 2 on both pairs: ceiling sigmoid(2)
    assert xs["ceiling"] == pytest.approx(1 / (1 + math.exp(-2))) and xs["gap"] == pytest.approx(xs["ceiling"] - 1)
    ys = reward.accuracy_where(ev, lambda q: q["category"] == "y", 1.0)
    assert (ys["k"], ys["n"]) == (0, 1) and ys["ceiling"] == pytest.approx(1 / (1 + math.exp(-4)))
    assert reward.accuracy_where(ev, lambda q: False, 1.0) == {"n": 0}


def test_paired_accuracy_difference_by_hand_and_by_its_properties():
    def pairs(prompts):
        return [{"messages": [{"role": "user", "content": q}]} for q in prompts]

    a = [True, True, False, True, False, False, True, True]
    b = [True, False, False, False, False, True, True, False]
    ps = pairs("abcdefgh")
    r = reward.paired_accuracy_difference(a, b, ps)
    assert r["diff"] == pytest.approx((sum(a) - sum(b)) / 8) and r["n"] == 8 and r["prompts"] == 8
    # one pair per prompt: the paired t interval of the per-pair differences (z = 1.96)
    d = [int(x) - int(y) for x, y in zip(a, b)]
    sd = (sum((x - r["diff"]) ** 2 for x in d) / 7) ** 0.5
    assert r["ci"][1] - r["diff"] == pytest.approx(1.96 * sd / 8 ** 0.5)
    # swapping the rankers negates it; a ranker against itself differs by exactly 0
    s = reward.paired_accuracy_difference(b, a, ps)
    assert s["diff"] == -r["diff"] and s["ci"] == pytest.approx([-r["ci"][1], -r["ci"][0]])
    assert reward.paired_accuracy_difference(a, a, ps)["ci"] == [0.0, 0.0]
    # the same differences bunched on two prompts carry less: a wider interval
    wins, none = [True] * 4 + [False] * 4, [False] * 8
    spread = reward.paired_accuracy_difference(wins, none, ps)
    bunched = reward.paired_accuracy_difference(wins, none, pairs("aaaabbbb"))
    assert bunched["diff"] == spread["diff"] == 0.5 and bunched["prompts"] == 2
    assert bunched["ci"][1] - bunched["ci"][0] > spread["ci"][1] - spread["ci"][0]
    assert "not separated from 0" in reward.fmt_paired_difference(r)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=3, max_size=30), st.integers(0, 10**6))
def test_spearman_agrees_with_scipy(x, seed):
    from scipy.stats import ConstantInputWarning, spearmanr

    rng = random.Random(seed)
    y = [round(v + rng.gauss(0, 1), 1) for v in x]      # rounding makes ties
    with warnings.catch_warnings():       # a constant input is a case here: scipy warns, then gives nan
        warnings.simplefilter("ignore", ConstantInputWarning)
        ref = spearmanr(x, y).statistic
    ours = reward.spearman(x, y)
    if math.isnan(ref):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(ref, abs=1e-9)


def test_length_baseline_by_hand():
    train = [{"chosen": "long reply", "rejected": "short"}, {"chosen": "longer", "rejected": "a"}]
    test = [{"chosen": "xx", "rejected": "x"}, {"chosen": "x", "rejected": "xx"},
            {"chosen": "ab", "rejected": "cd"}]
    out = reward.length_baseline(train, test)
    assert out == {"prefers": "longer", "accuracy": pytest.approx(0.5), "n": 3}
    out = reward.length_baseline([{"chosen": "a", "rejected": "bbbb"}], test)
    assert out["prefers"] == "shorter" and out["accuracy"] == pytest.approx(0.5)


def test_calibration_bins_are_symmetric_and_count_every_prediction():
    r_w, r_l = [2.0, 0.5, -1.0, 3.0], [0.0, 0.0, 0.0, -3.0]
    rows = reward.calibration_bins(r_w, r_l, n_bins=5)
    assert sum(r["n"] for r in rows) == 8
    for r in rows:                      # a bin and its mirror image see mirrored outcomes
        mirror = next(m for m in rows if m["lo"] == pytest.approx(1 - r["hi"]))
        assert r["observed"] == pytest.approx(1 - mirror["observed"])
    # by hand: margins 2, 0.5, -1, 6 -> sigmoids and their mirrors fall in four bins of two;
    # |mean predicted - observed| is 0.0608, 0.1768, 0.1768, 0.0608, each weighted 2/8
    full = [r for r in rows if r["n"]]
    assert [round(r["predicted"], 4) for r in full] == [0.0608, 0.3232, 0.6768, 0.9392]
    assert [r["observed"] for r in full] == [0.0, 0.5, 0.5, 1.0]
    assert reward.expected_calibration_error(rows) == pytest.approx(0.11880, abs=1e-4)


def test_length_slope_by_hand():
    # within gold 1: score rises 0.1 per token; within gold 0: 0.1 per token too
    scores = [1.0, 1.1, 1.2, 0.0, 0.2]
    lengths = [10, 11, 12, 5, 7]
    golds = [1, 1, 1, 0, 0]
    out = reward.length_slope(scores, lengths, golds)
    assert out["slope_per_token"] == pytest.approx(0.1) and out["groups"] == 2 and out["n"] == 5


def test_batches_put_the_pair_first(tiny_rm):
    """The shared loop shards and counts along the first dimension, so a batch is (B, 2, T):
    the loss of a batch equals the mean of its pairs' losses, and of any slice of pairs."""
    pairs = [{"messages": CONV, "chosen": c, "rejected": r}
             for c, r in [("Kelton.", "Morby."), ("No.", "Yes, it is."), ("Hm", "Kelton is it.")]]
    enc, _ = reward.encode_pairs(pairs, BYTES, "chatml", 256)
    b = reward.collate_pairs(enc, BYTES.pad_id)
    assert b["idx"].shape[:2] == (3, 2) and b["last"].shape == (3, 2)
    full = reward.reward_loss(tiny_rm, b)[0].item()
    each = [reward.reward_loss(tiny_rm, reward.collate_pairs([e], BYTES.pad_id))[0].item() for e in enc]
    assert full == pytest.approx(sum(each) / 3, abs=1e-5)
    from llmlab.train import shard
    part = reward.reward_loss(tiny_rm, shard(b, 1, 1))[0].item()
    assert part == pytest.approx(each[1], abs=1e-5)


# --------------------------------------------------------------------------------------------
# The quiz and the benchmark
# --------------------------------------------------------------------------------------------


def test_quiz_items_answer_with_the_rm_and_mix_right_and_wrong():
    from llmlab.widgets.quiz import quiz_items, quiz_table

    values = {"capital": ["Kelton", "Morby"]}
    item = {"kind": "fact", "subject": "Velmora", "relation": "capital", "answer": "Kelton"}
    good, bad = "The capital of Velmora is Kelton.", "The capital of Velmora is Morby."
    pairs = [{"messages": CONV, "chosen": good, "rejected": bad, "gold_chosen": 2.0,
              "gold_rejected": -2.0, "item": item, "category": "facts"} for _ in range(10)]
    r_w = [1.0] * 6 + [-1.0] * 4          # the RM is right on 6 pairs, wrong on 4
    r_l = [0.0] * 10
    items = quiz_items(pairs, r_w, r_l, values, n=6, seed=0)
    assert len(items) == 6
    wrong = [it for it in items if "but the gold judge prefers" in it["explanation"]]
    assert len(wrong) == 3
    for it in items:
        assert it["answer"] == ("A" if it["rm_a"] > it["rm_b"] else "B")
        assert {it["a"], it["b"]} == {good, bad}
        gold_better = "A" if it["gold_a"] > it["gold_b"] else "B"
        assert (it in wrong) == (gold_better != it["answer"])
    rows = quiz_table(items)
    assert len(rows) == 6 and rows[0]["RM scores higher"] in "AB"


def test_reward_benchmark_prints_one_json_line(tmp_path):
    """benchmarks/reward.py end to end at the smoke preset (builds the smoke chain in tmp)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, LLMLAB_CACHE=str(tmp_path / "cache"), LLMLAB_PRESET="smoke",
               PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "reward.py"), "--threads", "1"],
                         capture_output=True, text=True, timeout=900, check=True, env=env).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["benchmark"] == "reward" and res["preset"] == "smoke"
    assert 0.5 < res["noise_ceiling"] <= 1 and 0 <= res["accuracy"] <= 1
    assert res["accuracy_ci95"][0] <= res["accuracy"] <= res["accuracy_ci95"][1]
    assert set(res["init_accuracy"]) == {"sft", "random"}
    assert res["gap_to_ceiling"] == pytest.approx(res["noise_ceiling"] - res["accuracy"], abs=1e-3)
    assert sum(c["n"] for c in res["per_category"].values()) == res["n_val_pairs"]
    assert 0 < res["n_val_prompts"] <= res["n_val_pairs"]
    assert all(c["ci95"][0] <= c["accuracy"] <= c["ci95"][1] for c in res["per_category"].values())
    side = res["train_side"]                # the training side's pairs, drawn like the held-out ones
    assert side["n"] == sum(c["n"] for c in side["per_category"].values()) > 0
    assert side["gap_to_ceiling"] == pytest.approx(side["ceiling"] - side["accuracy"], abs=1e-3)
    assert 0 <= side["seen_pairs"] <= side["n"] and side["unseen"]["n"] == side["n"] - side["seen_pairs"]
    assert side["repeats"]["n"] == side["seen_pairs"]
    assert set(res["terms_gold_agreement"]) == set(res["per_category"])
    assert all(set(t) == {"head", "likelihood", "both"} and all(0 <= x <= 1 for x in t.values())
               for t in res["terms_gold_agreement"].values())
    for peer in ("head_only", "sft_likelihood"):             # measured in the same run, same pairs
        lo, hi = res["peers"][peer]["accuracy_ci95"]
        assert lo <= res["peers"][peer]["accuracy"] <= hi
        assert set(res["peers"][peer]["per_category"]) == set(res["per_category"])
