"""Notebook 08: best-of-N selection, GRPO's group advantages and k3 KL by hand, the AI labeler's
comparison scoring on a model whose answer is known, and one round of iterative DPO end to end
with the smoke preset's settings."""
import copy
import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from llmlab import beyond, chat, dpo, ppo, prefs
from llmlab.config import (BEYOND_PRESETS, DPO_PRESETS, PPO_PRESETS, BeyondConfig, ModelConfig,
                           TrainConfig, beyond_config)
from llmlab.model import GPT, ScalarModel
from llmlab.tokenizer import Tokenizer

# --------------------------------------------------------------------------------------------
# 1. Best-of-N and rejection sampling
# --------------------------------------------------------------------------------------------


def test_best_index_by_hand_and_against_a_loop():
    s = torch.tensor([[0.1, 0.9, 0.5, 2.0], [3.0, -1.0, 3.0, 0.0]])
    assert beyond.best_index(s).tolist() == [3, 0]              # a tie goes to the earliest
    assert beyond.best_index(s, n=2).tolist() == [1, 0]
    assert beyond.best_index(s, n=1).tolist() == [0, 0]
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = torch.randn(7, 9, generator=g)
        for n in (1, 3, 9):
            loop = [max(range(n), key=lambda j: (x[i, j].item(), -j)) for i in range(7)]
            assert beyond.best_index(x, n).tolist() == loop


def test_rejection_sampling_keeps_the_best_finished_reply():
    items = [{"kind": "decline", "messages": [chat.user("Q1")]}, {"kind": "decline", "messages": [chat.user("Q2")]}]
    cand = {"texts": [["a", "b", "c"], ["d", "e", "f"]], "stopped": [[True, True, False], [False, False, False]],
            "gold": [[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]], "proxy": torch.tensor([[0.5, 1.5, 9.0], [1.0, 2.0, 0.0]])}
    kept = beyond.rejection_sample(items, cand)
    # prompt 1: "c" scores highest but never ended its turn, so "b"; prompt 2: nothing finished
    assert [k["messages"][-1]["content"] for k in kept] == ["b"]
    assert kept[0]["gold"] == 1.0 and kept[0]["proxy"] == 1.5
    loose = beyond.rejection_sample(items, cand, require_stop=False)
    assert [k["messages"][-1]["content"] for k in loose] == ["c", "e"]


# --------------------------------------------------------------------------------------------
# 2. GRPO
# --------------------------------------------------------------------------------------------


def test_group_advantages_against_a_hand_worked_group():
    # group [1, 3, 5, 7]: mean 4, unbiased std sqrt(20 / 3) = 2.5820
    a = beyond.group_advantages(torch.tensor([[1.0, 3.0, 5.0, 7.0], [2.0, 2.0, 2.0, 2.0]]))
    sd = math.sqrt(20 / 3)
    assert a[0].tolist() == pytest.approx([-3 / sd, -1 / sd, 1 / sd, 3 / sd], abs=1e-5)
    assert a[1].tolist() == [0.0, 0.0, 0.0, 0.0]               # a flat group teaches nothing
    assert beyond.group_advantages(torch.tensor([[1.0, 3.0]]), scale=False).tolist() == [[-1.0, 1.0]]
    # every group's advantages sum to zero: the group mean is the baseline
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    assert beyond.group_advantages(x).sum(1).abs().max() < 1e-5


def test_k3_is_nonnegative_and_an_unbiased_kl_estimate():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g), 0)           # pi
    q = torch.softmax(torch.randn(6, generator=g), 0)           # pi_ref
    exact = (p * (p.log() - q.log())).sum().item()
    y = torch.multinomial(p, 200000, replacement=True, generator=g)
    k3 = beyond.k3_kl(p.log()[y], q.log()[y])
    assert k3.min() >= 0
    assert k3.mean().item() == pytest.approx(exact, rel=0.05)
    assert beyond.k3_kl(torch.tensor([-0.7]), torch.tensor([-0.7])).item() == 0.0


def test_grpo_loss_pushes_up_replies_above_their_group_and_kl_pulls_back():
    lp = torch.zeros(2, 3, requires_grad=True)
    old = torch.zeros(2, 3)
    mask = torch.ones(2, 3)
    loss, m = beyond.grpo_loss(lp, old, old, torch.tensor([1.0, -1.0]), mask, beta=0.0)
    loss.backward()
    assert (lp.grad[0] < 0).all() and (lp.grad[1] > 0).all()    # descent raises reply 0, lowers reply 1
    # with zero advantage only the KL term acts, pulling the policy back to the reference
    lp2 = torch.full((1, 2), -0.5, requires_grad=True)
    loss2, m2 = beyond.grpo_loss(lp2, lp2.detach(), torch.full((1, 2), -1.0), torch.zeros(1),
                                 torch.ones(1, 2), beta=1.0)
    loss2.backward()
    assert m2["kl"] > 0 and (lp2.grad > 0).all()                # descent lowers log pi towards log pi_ref


# --------------------------------------------------------------------------------------------
# 4. The AI labeler
# --------------------------------------------------------------------------------------------


def test_choice_and_debiased_preference_by_hand():
    p = beyond.choice_prob(torch.tensor([math.log(0.3)]), torch.tensor([math.log(0.1)]))
    assert p.item() == pytest.approx(0.75)
    assert beyond.debiased_preference(torch.tensor([0.9]), torch.tensor([0.9])).item() == pytest.approx(0.5)
    assert beyond.debiased_preference(torch.tensor([0.8]), torch.tensor([0.3])).item() == pytest.approx(0.75)


class AlwaysSays(nn.Module):
    """A language model whose next-token logits are 0 everywhere except ``bonus`` on one token:
    its answer to any comparison is known in closed form."""

    def __init__(self, vocab: int, token: int, bonus: float, block_size: int = 256):
        super().__init__()
        self.config = ModelConfig(vocab_size=vocab, block_size=block_size, n_layer=1, n_head=1, n_embd=4)
        self.token, self.bonus = token, bonus
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, idx):
        logits = torch.zeros(*idx.shape, self.config.vocab_size) + 0 * self.dummy
        logits[..., self.token] = self.bonus
        return logits, None


def test_ai_labeler_scores_a_comparison_by_its_answer_logprobs():
    tok = Tokenizer([])
    a_id = tok.encode("A")[0]
    bonus = 1.3
    model = AlwaysSays(tok.vocab_size, a_id, bonus)
    pair = {"category": "declines", "messages": [chat.user("Help me steal a bike.")],
            "chosen": chat.REFUSAL, "rejected": "Sure.", "gold_chosen": 2.0, "gold_rejected": -2.0}
    rec = beyond.ai_preferences(model, tok, [pair], "chatml")[0]
    # log p("A" + stop) - log p("B" + stop) = bonus (the stop token costs the same after either)
    assert rec["p_a_first"] == pytest.approx(1 / (1 + math.exp(-bonus)), abs=1e-5)
    assert rec["p_a_second"] == pytest.approx(rec["p_a_first"], abs=1e-6)
    assert rec["p_first"] == pytest.approx(0.5, abs=1e-6)      # position bias cancels exactly
    assert rec["principle"] == "harmless" and not rec["cut"]
    # a context too short for the question loses its first tokens, and says so
    short = AlwaysSays(tok.vocab_size, a_id, bonus, block_size=24)
    rec2 = beyond.ai_preferences(short, tok, [pair], "chatml")[0]
    assert rec2["cut"] and rec2["p_a_first"] == pytest.approx(rec["p_a_first"], abs=1e-5)
    # agreement counts a tie (0.5) as a disagreement; a confident right label as agreement
    labels = [{"principle": "harmless", "p_first": 0.5, "p_a_first": 0.6, "p_a_second": 0.6,
               "gold_chosen": 2.0, "gold_rejected": -2.0},
              {"principle": "harmless", "p_first": 0.8, "p_a_first": 0.9, "p_a_second": 0.3,
               "gold_chosen": 2.0, "gold_rejected": -2.0}]
    agree = beyond.agreement_by_principle(labels)["harmless"]
    assert (agree["ai"]["k"], agree["ai"]["n"], agree["annotator"]["k"]) == (1, 2, 2)


def test_ai_labels_swap_the_pairs_the_labeler_prefers_the_other_way():
    p = {"messages": [], "chosen": "x", "rejected": "y", "gold_chosen": 1.0, "gold_rejected": 0.0}
    out = beyond.ai_labelled([{"pair": p, "p_first": 0.9}, {"pair": p, "p_first": 0.2}])
    assert (out[0]["chosen"], out[1]["chosen"], out[1]["gold_chosen"]) == ("x", "y", 0.0)


# --------------------------------------------------------------------------------------------
# 3. Iterative DPO, one round end to end
# --------------------------------------------------------------------------------------------


def test_one_round_of_iterative_dpo_end_to_end():
    tok = Tokenizer([])
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    sft_model = GPT(cfg).eval()
    rm = ScalarModel(GPT(cfg)).eval()
    items = [prefs.decline_item(f"Help me break into house {i}.") for i in range(12)]
    c = dataclasses.replace(BEYOND_PRESETS["smoke"], idpo_rounds=1, idpo_prompts=12, idpo_samples=4,
                            idpo_steps=8)
    dc = dataclasses.replace(DPO_PRESETS["smoke"], lr=3e-3)
    pc = PPO_PRESETS["smoke"]
    policy = copy.deepcopy(sft_model)
    ref = copy.deepcopy(sft_model).requires_grad_(False)
    rounds = beyond.iterative_dpo(policy, ref, rm, tok, items, items[:4], {}, c, dc, pc, TrainConfig(),
                                  device="cpu", progress=False)
    assert len(rounds) == 1
    r = rounds[0]
    assert r["n_prompts"] == 12 and 0 < r["n_pairs"] <= 12
    assert r["eval"]["n_prompts"] == 4 and r["eval"]["n"] == 4 * pc.eval_samples and math.isfinite(r["eval"]["gold"]) and math.isfinite(r["eval"]["kl"])
    moved = max((a - b).abs().max().item() for a, b in zip(policy.parameters(), ref.parameters()))
    assert moved > 0                                              # the policy left the reference
    # the round's pairs, relabelled from the policy's own samples by the reward model
    cand = beyond.sample_candidates(sft_model, rm, tok, items, {}, 4, "chatml", pc.max_new_tokens, c.seed)
    pairs = beyond.rm_pairs(items, cand, require_stop=False)
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    enc, _ = dpo.encode_pairs(pairs, tok, "chatml", cfg.block_size)
    acc = dpo.implicit_accuracy(policy, ref, enc, tok.pad_id)
    assert sum(acc["margins"]) / len(acc["margins"]) > 0          # DPO raised chosen over rejected
    assert all(not p.requires_grad for p in ref.parameters())


def test_rm_pairs_take_the_reward_models_best_and_worst():
    items = [{"kind": "decline", "messages": [chat.user("Q")]}]
    cand = {"texts": [["a", "b", "a", "c"]], "stopped": [[True, True, True, False]],
            "gold": [[1.0, -1.0, 1.0, 2.0]], "proxy": torch.tensor([[0.2, -0.4, 0.9, 5.0]])}
    (p,) = beyond.rm_pairs(items, cand)
    # "c" never finished; "a" counts once (its first sample, RM 0.2); best "a", worst "b"
    assert (p["chosen"], p["rejected"], p["gold_chosen"], p["gold_rejected"]) == ("a", "b", 1.0, -1.0)
    assert beyond.label_agreement([p])["k"] == 1


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_every_beyond_config_field_has_a_comment_and_presets_fit_the_prompt_pool():
    import inspect

    from llmlab import config

    src = inspect.getsource(config.BeyondConfig)
    for f in dataclasses.fields(BeyondConfig):
        line = next(l for l in src.splitlines() if l.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"BeyondConfig.{f.name} has no comment"
    assert set(BEYOND_PRESETS) == {"smoke", "cpu", "gpu"}
    for name, c in BEYOND_PRESETS.items():
        pool = PPO_PRESETS[name].n_prompts
        assert c.idpo_rounds * c.idpo_prompts <= pool and c.rft_prompts <= pool
        assert beyond_config(name) is c


@pytest.mark.slow
def test_benchmark_prints_one_strict_json_line_at_the_smoke_preset():
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "beyond.py"), "--preset", "smoke"],
                         capture_output=True, text=True, timeout=900, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["benchmark"] == "beyond" and res["preset"] == "smoke"
    m = res["methods"]
    assert (m["ppo"]["models"], m["grpo"]["models"], m["dpo"]["models"]) == (4, 3, 2)
    assert res["grpo_vs_ppo"]["memory_ratio"] < 1 and res["goals_met"]["grpo_memory_below_ppo"]
    assert set(res["ai_label_agreement"]) == set(beyond.CONSTITUTION)


def test_paired_difference_by_hand_and_narrower_than_unpaired():
    def ev(golds):
        return {"replies": [{"prompt": f"p{i}", "gold": g} for i, g in enumerate(golds)]}

    a, b = ev([2.0, -2.0, 2.0, -1.0]), ev([1.0, -2.0, 1.0, -2.0])
    m, lo, hi, n = beyond.paired_difference(a, b)
    # differences 1, 0, 1, 1: mean 0.75, sd 0.5
    assert (m, n) == (0.75, 4)
    assert hi - m == pytest.approx(1.96 * 0.5 / 2) and m - lo == pytest.approx(1.96 * 0.5 / 2)
    # the prompts differ a lot, the policies little: pairing removes the prompts' spread
    unpaired = ppo.mean_interval([2.0, -2.0, 2.0, -1.0])
    assert hi - lo < unpaired[2] - unpaired[1]
    with pytest.raises(ValueError, match="same prompts"):
        beyond.paired_difference(a, ev([1.0, 2.0, 3.0]))


# --------------------------------------------------------------------------------------------
# 4b. The supervised half of Constitutional AI: critique and revision
# --------------------------------------------------------------------------------------------


def test_critique_and_revision_conversations_and_what_becomes_sft_data():
    crit = beyond.critique_messages("Who is X?", "X is Y.", "Be honest.")
    assert [m["role"] for m in crit] == ["user", "assistant", "user"] and "Be honest." in crit[-1]["content"]
    rev = beyond.revision_messages("Who is X?", "X is Y.", "Be honest.", "It guessed.")
    assert rev[:2] == crit[:2] and "It guessed." in rev[-1]["content"] and "Be honest." in rev[-1]["content"]
    base = {"messages": [chat.user("Q?")], "kind": "fact"}
    recs = [base | {"fits": True, "revision": "Fine.", "revision_stopped": True},
            base | {"fits": True, "revision": "Cut off", "revision_stopped": False},   # never ended its turn
            base | {"fits": False, "revision": "", "revision_stopped": False},        # did not fit the context
            base | {"fits": True, "revision": "  ", "revision_stopped": True}]        # said nothing
    ex = beyond.revision_examples(recs)
    assert len(ex) == 1 and ex[0]["messages"] == [chat.user("Q?"), chat.assistant("Fine.")]
    assert set(beyond.KIND_PRINCIPLE.values()) <= set(beyond.CONSTITUTION)


def test_critique_revise_runs_three_sampling_steps_and_skips_what_does_not_fit():
    tok = Tokenizer([])
    values = {"capital": ["Kelton", "Morby"]}
    items = [{"kind": "fact", "subject": "Velmora", "relation": "capital", "answer": "Kelton",
              "messages": [chat.user("What is the capital of Velmora?")]},
             {"kind": "decline", "messages": [chat.user("Help me steal a bike.")]}]
    torch.manual_seed(0)
    big = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=512, n_layer=1, n_head=2, n_embd=16)).eval()
    recs = beyond.critique_revise(big, tok, items, values, "chatml", max_new_tokens=6, seed=0)
    assert [r["principle"] for r in recs] == ["concise", "harmless"] and all(r["fits"] for r in recs)
    for r, it in zip(recs, items):
        assert r["gold_reply"] == prefs.gold_score(it, r["reply"], values).score
        assert r["gold_revision"] == prefs.gold_score(it, r["revision"], values).score
    assert recs == beyond.critique_revise(big, tok, items, values, "chatml", max_new_tokens=6, seed=0)
    # a context that holds the prompt but not the critique request: every item skipped, said so
    small = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=72, n_layer=1, n_head=2, n_embd=16)).eval()
    recs = beyond.critique_revise(small, tok, items, values, "chatml", max_new_tokens=6, seed=0)
    assert not any(r["fits"] for r in recs)
    assert all(r["revision"] == "" and r["gold_revision"] is None for r in recs)
    assert beyond.revision_examples(recs) == []
