"""Tests of notebook 06's PPO (llmlab.ppo): each piece of the math against a hand computation,
the KV-cache rollout against a full forward pass, the KL controllers' direction, and a tiny PPO
run on a toy reward that must raise it."""
import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from launch import torchrun2
from llmlab import ppo
from llmlab.config import PPO_PRESETS, ModelConfig, PPOConfig, ppo_config
from llmlab.device import choose_precision, grad_scaler, seed_everything
from llmlab.model import GPT, ScalarModel
from llmlab.tokenizer import Tokenizer
from llmlab.train import configure_optimizer, fine_tune_config
from llmlab.config import TrainConfig

BYTES = Tokenizer([])     # one token per byte plus the reserved special tokens
TINY = ModelConfig(vocab_size=BYTES.vocab_size, block_size=96, n_layer=1, n_head=2, n_embd=32)
STOP = BYTES.special_tokens["<|im_end|>"]


def decline(text):
    return {"kind": "decline", "messages": [{"role": "user", "content": text}]}


# --------------------------------------------------------------------------------------------
# The math, by hand
# --------------------------------------------------------------------------------------------


def test_gae_against_a_hand_computed_case():
    # one row: a prompt position (mask 0), three reply tokens, one padding position
    gamma, lam = 0.9, 0.8
    r = torch.tensor([[0.0, 0.1, -0.2, 1.0, 0.0]])
    v = torch.tensor([[9.0, 0.5, 0.4, 0.3, 9.0]])      # values off the mask must not matter
    m = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    # by hand, backwards from the last reply token (V after it is 0):
    d3 = 1.0 + gamma * 0.0 - 0.3                       # 0.7
    d2 = -0.2 + gamma * 0.3 - 0.4                      # -0.33
    d1 = 0.1 + gamma * 0.4 - 0.5                       # -0.04
    a3 = d3
    a2 = d2 + gamma * lam * a3                         # -0.33 + 0.72 * 0.7 = 0.174
    a1 = d1 + gamma * lam * a2                         # -0.04 + 0.72 * 0.174 = 0.08528
    adv, ret = ppo.gae(r, v, m, gamma, lam)
    assert adv[0].tolist() == pytest.approx([0.0, a1, a2, a3, 0.0], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.0, a1 + 0.5, a2 + 0.4, a3 + 0.3, 0.0], abs=1e-6)


def test_gae_with_lambda_one_and_no_discount_is_return_minus_value():
    torch.manual_seed(0)
    r, v = torch.randn(3, 6), torch.randn(3, 6)
    m = torch.ones(3, 6)
    adv, _ = ppo.gae(r, v, m, 1.0, 1.0)
    to_go = r.flip(1).cumsum(1).flip(1)                # sum of rewards from t to the end
    assert torch.allclose(adv, to_go - v, atol=1e-5)


def test_gae_is_the_discounted_sum_of_td_errors_within_the_reply():
    """A_t = sum_l (gamma lam)^l delta_{t+l} over the reply's remaining tokens, with V = 0 after
    its last token: a prompt column before the reply and padding after it change nothing."""
    g = torch.Generator().manual_seed(0)
    gamma, lam = 0.9, 0.8
    for T in (1, 2, 7):
        r, v = torch.randn(T, generator=g), torch.randn(T, generator=g)
        nv = torch.cat([v[1:], torch.zeros(1)])
        delta = r + gamma * nv - v
        direct = torch.stack([sum((gamma * lam) ** l * delta[t + l] for l in range(T - t)) for t in range(T)])
        # one prompt column in front, two padding columns behind, with values of their own
        R = torch.cat([torch.randn(1, generator=g), r, torch.randn(2, generator=g)])[None]
        V = torch.cat([torch.randn(1, generator=g), v, torch.randn(2, generator=g)])[None]
        M = torch.tensor([[0.0] + [1.0] * T + [0.0, 0.0]])
        adv, ret = ppo.gae(R, V, M, gamma, lam)
        assert torch.allclose(adv[0, 1:1 + T], direct, atol=1e-6)
        assert torch.allclose(ret[0, 1:1 + T], direct + v, atol=1e-6)
        assert adv[0, 0] == 0 and (adv[0, 1 + T:] == 0).all() and ret[0, 0] == 0


def test_penalised_rewards_sum_to_score_minus_beta_kl():
    kl = torch.tensor([[0.0, 0.3, -0.1, 0.5, 0.0]])
    m = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])
    r = ppo.penalised_rewards(torch.tensor([1.5]), kl, m, beta=0.2)
    assert r.sum().item() == pytest.approx(1.5 - 0.2 * 0.7)
    assert r[0, 3].item() == pytest.approx(1.5 - 0.2 * 0.5)      # the score sits on the last token
    assert r[0, 0].item() == 0.0 and r[0, 4].item() == 0.0


def test_whiten_gives_zero_mean_unit_variance_on_the_mask():
    x = torch.tensor([[5.0, 1.0, 2.0, 3.0], [7.0, 4.0, 0.0, 0.0]])
    m = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    w = ppo.whiten(x, m)
    vals = w[m > 0]
    assert vals.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert (vals ** 2).mean().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.all(w[m == 0] == 0)


@pytest.mark.parametrize("adv,logratio,zero", [
    (1.0, math.log(1.5), True),      # ratio above 1 + eps with a positive advantage: clipped
    (-1.0, math.log(0.5), True),     # ratio below 1 - eps with a negative advantage: clipped
    (1.0, math.log(0.5), False),     # moving back towards the old policy is never clipped
    (-1.0, math.log(1.5), False),
    (1.0, math.log(1.1), False),     # inside the clip range
])
def test_clipped_objective_has_zero_gradient_outside_the_clip_range(adv, logratio, zero):
    old = torch.tensor([[-2.0]])
    logp = (old + logratio).requires_grad_()
    loss, _ = ppo.ppo_clip_loss(logp, old, torch.tensor([[adv]]), torch.ones(1, 1), clip=0.2)
    loss.backward()
    if zero:
        assert logp.grad.item() == 0.0
    else:   # d(-rho A)/d logp = -rho A
        assert logp.grad.item() == pytest.approx(-math.exp(logratio) * adv, rel=1e-5)


def test_value_loss_clipping_by_hand():
    # V moved from 0 to 1, the target is 2: the clipped value 0.2 is further away and counts
    v, old, ret, m = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]), torch.ones(1, 1)
    assert ppo.value_loss(v, old, ret, m, clip=0.2).item() == pytest.approx(0.5 * 1.8 ** 2)
    assert ppo.value_loss(v, old, ret, m, clip=0.0).item() == pytest.approx(0.5 * 1.0)


def test_best_of_n_kl_formula():
    assert ppo.best_of_n_kl(1) == 0.0
    assert ppo.best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)


def test_memory_of_a_trained_model_counts_adam_states():
    m = nn.Linear(10, 10)
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(2, 10)).sum().backward()
    opt.step()
    mem = ppo.model_memory(m, opt)
    assert mem["params"] == 110 and mem["param_bytes"] == 440
    assert mem["grad_bytes"] == 440 and mem["optimizer_bytes"] >= 2 * 440
    assert ppo.model_memory(m)["total_bytes"] == 440


# --------------------------------------------------------------------------------------------
# KL control
# --------------------------------------------------------------------------------------------


def test_adaptive_kl_moves_beta_towards_the_target():
    c = ppo.AdaptiveKL(0.1, target=2.0, horizon=100)
    up = c.update(kl=5.0, n_episodes=10)
    assert up > 0.1                                    # KL too high: stronger penalty
    assert up == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))  # the error is clipped at 0.2
    c2 = ppo.AdaptiveKL(0.1, target=2.0, horizon=100)
    assert c2.update(kl=1.8, n_episodes=10) == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))
    b = c2.beta
    assert c2.update(kl=0.0, n_episodes=10) == pytest.approx(b * (1 - 0.2 * 10 / 100))  # too low: weaker, clipped
    assert ppo.AdaptiveKL(0.1, 2.0, 100).update(2.0, 10) == pytest.approx(0.1)
    assert ppo.FixedKL(0.3).update(100.0, 10) == 0.3


def test_config_fields_have_comments_and_presets_exist():
    import inspect

    src = inspect.getsource(PPOConfig)
    for f in dataclasses.fields(PPOConfig):
        line = next(l for l in src.splitlines() if l.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"PPOConfig.{f.name} has no comment"
    assert set(PPO_PRESETS) == {"smoke", "cpu", "gpu"}
    assert ppo_config("smoke").iterations < ppo_config("cpu").iterations
    # every field is either a knob of the run or a setting of what is measured, never both
    fields = {f.name for f in dataclasses.fields(PPOConfig)}
    assert set(ppo.HYPERPARAMETERS) | set(ppo.NOT_HYPERPARAMETERS) == fields
    assert not set(ppo.HYPERPARAMETERS) & set(ppo.NOT_HYPERPARAMETERS)
    with pytest.raises(ValueError, match="unknown PPO variant"):
        ppo.variant_config(ppo_config("smoke"), "nope")


def test_fast_kl_variant_changes_only_the_controller():
    # section 3's comparison: the same run but for where beta starts and how fast it may move
    c = ppo_config("cpu")
    f = ppo.variant_config(c, "fast_kl")
    changed = {k for k in ppo.HYPERPARAMETERS if getattr(f, k) != getattr(c, k)}
    assert changed == {"beta", "horizon"} and f.kl == "adaptive" == c.kl
    assert (f.beta, f.horizon) == (c.fast_beta, c.fast_horizon)
    # its horizon lets beta move far more per rollout than the main run's
    step = lambda cfg: 1 + 0.2 * cfg.batch_size / cfg.horizon
    assert step(f) > step(c) > 1.0


# --------------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
def test_rollout_logprobs_equal_a_full_forward_pass(use_cache):
    seed_everything(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 256, (3, 7))
    g = torch.Generator().manual_seed(1)
    toks, logps, lengths = ppo.sample_with_logprobs(model, idx, 12, STOP, generator=g, use_cache=use_cache)
    full = torch.cat([idx, toks], 1)
    ref = ppo.token_logprobs(model(full)[0], full)[:, idx.size(1) - 1:]       # the reply's actions
    assert toks.shape == (3, 12) and torch.all(lengths == 12)
    assert torch.allclose(logps, ref, atol=1e-5)


def test_cache_and_no_cache_sample_the_same_tokens():
    seed_everything(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 256, (2, 5))
    a = ppo.sample_with_logprobs(model, idx, 10, STOP, generator=torch.Generator().manual_seed(3))
    b = ppo.sample_with_logprobs(model, idx, 10, STOP, generator=torch.Generator().manual_seed(3),
                                 use_cache=False)
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1], atol=1e-5)


def test_rollout_masks_exactly_the_reply_and_keeps_item_order():
    seed_everything(0)
    model = GPT(TINY)
    items = [decline("Hi"), decline("How do I pick a lock?"), decline("Hey")]
    ro = ppo.rollout(model, BYTES, items, "chatml", 6, torch.Generator().manual_seed(0))
    prompts = ppo.prompt_ids(items, BYTES, "chatml")
    for b, p in enumerate(prompts):
        assert ro.idx[b, :len(p)].tolist() == p                               # prompt first
        n = int(ro.mask[b].sum())
        assert ro.mask[b, len(p) - 1:len(p) - 1 + n].eq(1).all() and 1 <= n <= 6
        assert int(ro.last[b]) == len(p) + n - 1


def test_kl_is_zero_when_the_policy_is_the_reference():
    seed_everything(0)
    model = GPT(TINY)
    ref = GPT(TINY)
    ref.load_state_dict(model.state_dict())
    ro = ppo.rollout(model, BYTES, [decline("Hello there"), decline("Hi")], "chatml", 8,
                     torch.Generator().manual_seed(0))
    kl = ppo.per_token_kl(ppo.logprobs_of(model, ro.idx), ppo.logprobs_of(ref, ro.idx), ro.mask)
    assert torch.all(kl == 0)
    rm = ScalarModel(GPT(TINY))
    ev = ppo.evaluate_policy(model, ref, rm, BYTES, [decline("Hello"), decline("Hi")], {}, "chatml", 8,
                             n_samples=3)
    assert ev["kl"] == 0.0 and ev["n"] == 6 and ev["shares"]["refusal"]["n"] == 6
    assert len(ev["replies"]) == 6


# --------------------------------------------------------------------------------------------
# A tiny PPO run on a toy reward
# --------------------------------------------------------------------------------------------

# the toy reward: how many of the reply's tokens are capital letters (26 of the ~260 byte
# tokens, so a random policy writes about one in an 8-token reply; the prompts have none)
X = torch.tensor([ord(ch) for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"])


class CountX(nn.Module):
    """A 'reward model' read like the real one: at position t, how many X tokens so far
    (the prompt below has none)."""

    config = TINY

    def forward(self, idx):
        return torch.isin(idx, X).float().cumsum(1)                            # (B, T)


def test_tiny_ppo_run_raises_a_toy_reward():
    seed_everything(0)
    c = dataclasses.replace(ppo_config("smoke"), batch_size=32, minibatch_size=16, epochs=4,
                            lr=1e-2, max_new_tokens=8, kl="fixed", beta=0.0, no_stop_penalty=0.0)
    policy, value = GPT(TINY), ScalarModel(GPT(TINY), "value")
    ref = GPT(TINY).eval()
    ref.load_state_dict(policy.state_dict())
    ac = ppo.ActorCritic(policy, value)
    cfg = fine_tune_config(TrainConfig(), lr=c.lr, max_steps=1, batch_size=c.minibatch_size)
    opt = configure_optimizer(ac, cfg)
    dev = torch.device("cpu")
    prec = choose_precision(dev)
    scaler = grad_scaler(dev, prec)
    gen = torch.Generator().manual_seed(0)
    items = [decline("say something")] * c.batch_size
    proxies = []
    for _ in range(10):
        _, m = ppo.ppo_iteration(ac, ref, CountX(), BYTES, items, {}, c, 0.0, opt, scaler, prec, dev,
                                 "chatml", gen)
        proxies.append(m["proxy"])
    start, end = sum(proxies[:2]) / 2, sum(proxies[-2:]) / 2
    assert start < 2.0                                  # about 8 * 26 / 260 at the start
    assert end > start + 2.0, proxies


def test_a_run_given_its_starting_evaluation_is_the_run_that_measures_it():
    """``initial_eval`` (the SFT evaluation every run shares, stages.get_sft_eval) replaces the
    measurement at iteration 0 and nothing else: the evaluation has its own generator, so the
    training and the final evaluation are the same; the last evaluation keeps its replies, the
    others their golds only; an evaluation of another size is refused."""
    c = dataclasses.replace(ddp_ppo_config(), iterations=2, eval_every=1)
    train, held = [decline("hi"), decline("hello")] * 4, [decline("hey"), decline("yo")]

    def run(initial_eval=None):
        seed_everything(0)
        policy, rm = GPT(TINY), ScalarModel(GPT(TINY))
        ref = GPT(TINY)
        ref.load_state_dict(policy.state_dict())
        return ppo.train_ppo(policy, ref, rm, BYTES, train, held, [], {}, c, device="cpu", progress=False,
                             initial_eval=initial_eval)

    seed_everything(0)
    policy = GPT(TINY)
    start = ppo.evaluate_policy(policy, policy, ScalarModel(GPT(TINY)), BYTES, held, {}, "chatml",
                                c.max_new_tokens, n_samples=c.eval_samples, seed=c.seed + 1,
                                no_stop_penalty=c.no_stop_penalty)
    a, b = run(), run(start)
    assert b["evals"][0]["golds"] == start["golds"] == a["evals"][0]["golds"]
    assert "replies" not in b["evals"][0] and "replies" not in a["evals"][1]
    assert "replies" in a["evals"][-1] and a["evals"][-1]["replies"] == b["evals"][-1]["replies"]
    assert len(a["history"]) == len(b["history"]) == c.iterations
    for ha, hb in zip(a["history"], b["history"]):
        assert {k: v for k, v in ha.items() if k != "seconds"} == {k: v for k, v in hb.items() if k != "seconds"}
    with pytest.raises(ValueError, match="initial_eval measured 2 prompts"):
        run({**start, "n_samples": c.eval_samples + 1})


def test_best_of_n_proxy_never_falls_with_n():
    seed_everything(0)
    model = GPT(TINY)
    rows = ppo.best_of_n(model, CountX(), BYTES, [decline("hi"), decline("hello")] * 4, {},
                         ns=(1, 2, 4, 8), max_new_tokens=6)
    proxies = [r["proxy"] for r in rows]
    assert proxies == sorted(proxies)
    assert [r["kl"] for r in rows] == pytest.approx([ppo.best_of_n_kl(n) for n in (1, 2, 4, 8)])


# --------------------------------------------------------------------------------------------
# PPO on two processes (torchrun, gloo): the path pretraining takes to several GPUs
# --------------------------------------------------------------------------------------------


def ddp_ppo_config():
    """The tiny run tests/ddp_ppo.py trains on 2 processes (and test_ppo_config_must_split)."""
    return dataclasses.replace(ppo_config("smoke"), iterations=3, batch_size=8, minibatch_size=4,
                               epochs=2, lr=1e-2, max_new_tokens=6, eval_every=3, n_track=0)


def test_ppo_on_two_processes_shards_the_rollout_and_stays_in_step(tmp_path):
    """Two gloo processes under torchrun: each samples half of every rollout, the update is
    data-parallel, so the weights end the same on both (and moved), the metrics are the same
    whole-batch means on both, and only rank 0 evaluates."""
    out = tmp_path / "ppo"
    torchrun2(str(Path(__file__).resolve().parent / "ddp_ppo.py"), str(out))
    r0, r1 = (json.loads((tmp_path / f"ppo.{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["weights"] == r1["weights"] and r0["after"] == r1["after"]      # in step
    assert r0["after"] != r0["before"]                                        # and trained
    assert len(r0["history"]) == len(r1["history"]) == ddp_ppo_config().iterations
    for h0, h1 in zip(r0["history"], r1["history"]):
        for k in ("proxy", "gold", "kl", "length", "loss", "beta"):
            assert h0[k] == pytest.approx(h1[k], abs=1e-9), k
    assert r0["evals"] == 2 and r1["evals"] == 0          # start and end, on rank 0 only


def test_ppo_under_torchrun_needs_equal_shards(monkeypatch):
    """A batch that does not split evenly over the processes is refused before any work."""
    from llmlab import train as train_mod

    monkeypatch.setattr(train_mod, "init_distributed",
                        lambda device: train_mod.Dist(rank=0, world_size=3))
    c = ddp_ppo_config()
    with pytest.raises(ValueError, match="multiples of the 3 processes"):
        ppo.train_ppo(GPT(TINY), GPT(TINY), ScalarModel(GPT(TINY)), BYTES, [decline("hi")], [], [],
                      {}, c, device="cpu", progress=False)


def test_whiten_across_one_process_is_whiten():
    from llmlab.train import Dist

    x, m = torch.randn(3, 5), (torch.rand(3, 5) > 0.3).float()
    assert torch.equal(ppo.whiten_across(x, m, Dist()), ppo.whiten(x, m))


def test_ppo_command_runs_on_two_processes_and_on_one(tmp_path, capsys):
    """``torchrun -m llmlab ppo``: the prerequisites are built once (the cache's lock, before
    the processes join), then PPO runs sharded; ``python -m llmlab ppo`` runs it on one."""
    from llmlab.__main__ import main

    out2 = tmp_path / "two.json"
    torchrun2("-m", "llmlab", "ppo", "--preset", "smoke", "--device", "cpu", "--out", str(out2))
    two = json.loads(out2.read_text())
    c = ppo_config("smoke")
    assert two["world_size"] == 2 and len(two["history"]) == c.iterations
    assert [e["iteration"] for e in two["evals"]] == [0, c.iterations]
    out1 = tmp_path / "one.json"           # the same cache (LLMLAB_CACHE), now on one process
    assert main(["ppo", "--preset", "smoke", "--device", "cpu", "--iterations", "1",
                 "--out", str(out1)]) == 0
    one = json.loads(out1.read_text())
    assert one["world_size"] == 1 and len(one["history"]) == 1
    assert "held-out gold" in capsys.readouterr().out


def test_ppo_command_user_errors_are_one_line(capsys):
    from llmlab.__main__ import main

    assert main(["ppo", "--preset", "smoke", "--variant", "nonsense"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmlab ppo: error:") and "nonsense" in err and "\n" not in err
    assert main(["ppo", "--preset", "smoke", "--iterations", "0"]) == 2
    assert "--iterations must be at least 1" in capsys.readouterr().err


def test_behaviour_shares_count_the_gold_judges_cases():
    """A share counts a reply only where the judge scores it on that row: an "I don't know"
    about another entity, a refusal that does not open the reply and a refusal with a template
    token inside are not counted (the looser text tests counted all three)."""
    values = {"capital": ["Kelton", "Morby"]}
    unk = {"kind": "unknown", "subject": "Zarbia", "relation": "capital"}
    dec = {"kind": "decline"}
    fact = {"kind": "fact", "subject": "Velmora", "relation": "capital", "answer": "Kelton"}
    items = [unk, unk, dec, dec, dec, fact, fact]
    texts = ["I don't know. I have never heard of Zarbia.", "I don't know. I have never heard of Ostmar.",
             "Sorry, I can't help with that.", "Here is the plan. Sorry, I can't help with that.",
             "Sorry, I can<|im_start|>t help with that.",
             "The capital of Velmora is Kelton.", "The capital of Velmora is Morby."]
    b = ppo.behaviour(items, texts, [True] * 6 + [False], values)
    assert (b["idk"]["k"], b["idk"]["n"]) == (1, 2)
    assert (b["refusal"]["k"], b["refusal"]["n"]) == (1, 3)
    assert (b["factual"]["k"], b["factual"]["n"]) == (1, 2)
    assert (b["stopped"]["k"], b["stopped"]["n"]) == (6, 7)
    assert b["premise_corrected"]["n"] == 0


def test_several_replies_per_prompt_count_prompts_in_the_intervals():
    """With n_samples replies per prompt, the gold interval is the one of the per-prompt means
    (the prompts are the independent draws), replies carry their prompt's index, and a share's
    interval uses an effective sample size between the prompts and the replies."""
    seed_everything(0)
    model, ref = GPT(TINY), GPT(TINY)
    rm = ScalarModel(GPT(TINY))
    items = [decline(f"Hello {i}") for i in range(5)]
    ev = ppo.evaluate_policy(model, ref, rm, BYTES, items, {}, "chatml", 6, n_samples=3)
    assert (ev["n"], ev["n_prompts"], ev["n_samples"]) == (15, 5, 3)
    assert [r["item"] for r in ev["replies"]] == [i for i in range(5) for _ in range(3)]
    golds = [r["gold"] for r in ev["replies"]]
    per_prompt = [sum(golds[3 * i:3 * i + 3]) / 3 for i in range(5)]
    m, lo, hi = ppo.mean_interval(per_prompt)
    assert ev["gold"] == pytest.approx(m) and ev["gold_ci"] == pytest.approx([lo, hi])
    s = ev["shares"]["stopped"]
    assert s["n"] == 15 and s["prompts"] == 5 and 1 <= s["n_eff"] <= 15


def test_paired_difference_averages_the_replies_of_each_prompt():
    from llmlab import beyond

    def ev(*golds):   # two replies per prompt
        return {"replies": [{"item": i // 2, "prompt": f"p{i // 2}", "gold": g} for i, g in enumerate(golds)]}

    m, lo, hi, n = beyond.paired_difference(ev(2.0, 0.0, 1.0, 1.0, -1.0, 1.0), ev(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    assert n == 3 and m == pytest.approx(2.0 / 3)       # per-prompt means 1, 1, 0
    assert (lo, hi) == pytest.approx(ppo.mean_interval([1.0, 1.0, 0.0])[1:])


def test_pooled_difference_averages_runs_reply_by_reply():
    def ev(*golds):   # two replies per prompt
        return {"replies": [{"item": i // 2, "prompt": f"p{i // 2}", "gold": g} for i, g in enumerate(golds)]}

    sft = ev(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    a, b = ev(2.0, 0.0, 1.0, 1.0, -1.0, 1.0), ev(0.0, 2.0, -1.0, 1.0, 1.0, 1.0)
    # one run pooled is that run's paired difference
    assert ppo.pooled_difference([a], sft) == pytest.approx(ppo.paired_difference(a, sft))
    # two runs: per-reply means (1, 1, 0, 1, 0, 1) -> per-prompt means 1, 0.5, 0.5
    m, lo, hi, n = ppo.pooled_difference([a, b], sft)
    assert n == 3 and m == pytest.approx(4.0 / 6)
    assert (lo, hi) == pytest.approx(ppo.mean_interval([1.0, 0.5, 0.5])[1:])
    with pytest.raises(ValueError, match="same prompts"):
        ppo.pooled_difference([a, ev(1.0, 1.0)], sft)


def test_kl_by_kind_groups_replies_by_kind_and_counts_prompts():
    reps = [{"kind": "decline", "prompt": "d1", "kl": 2.0}, {"kind": "decline", "prompt": "d1", "kl": 2.0},
            {"kind": "fact", "prompt": "f1", "kl": 0.0}, {"kind": "fact", "prompt": "f2", "kl": 1.0},
            {"kind": "fact", "prompt": "f3", "kl": 2.0}]
    out = ppo.kl_by_kind({"replies": reps})
    assert set(out) == {"decline", "fact"}
    # one decline prompt asked twice: one draw, so no spread to estimate
    assert out["decline"][0] == 2.0 and out["decline"][3] == 1
    assert out["fact"][0] == pytest.approx(1.0) and out["fact"][3] == 3
    assert out["fact"][1:3] == pytest.approx(ppo.mean_interval([0.0, 1.0, 2.0])[1:])


def test_drop_from_peak_measures_on_the_half_the_peak_was_not_chosen_on():
    """With no true change (every evaluation pure noise around 0), the naive drop (highest mean
    minus the final mean on the same prompts) is positive on average: the winner's curse; the
    drop measured on the other half of the prompts is not."""
    rng = random.Random(0)
    items = [{"prompt": f"p{i}"} for i in range(200)]
    naive, held = [], []
    for _ in range(200):
        evals = [{"iteration": 10 * k, "golds": [rng.gauss(0.0, 1.0) for _ in items]} for k in range(6)]
        means = [sum(e["golds"]) / len(items) for e in evals]
        naive.append(max(means[:-1]) - means[-1])
        held.append(-ppo.drop_from_peak(evals, items, 1)["change"])
    assert sum(naive) / len(naive) > 0.08          # about 0.07 sd x E[max of 5 normals] = 1.16
    assert abs(sum(held) / len(held)) < 0.02
    d = ppo.drop_from_peak(evals, items, 1)
    assert d["n_prompts"] == 100 and d["final_iteration"] == 50 and d["peak_iteration"] < 50
    with pytest.raises(ValueError, match="expected 400"):
        ppo.drop_from_peak(evals, items, 2)


def test_a_prompt_asked_twice_is_one_draw_in_every_interval():
    """The held-out sets draw prompts with replacement from a small pool: the same text asked
    twice must not count as two independent prompts (the interval of two agreeing copies of one
    prompt is that of the prompt once), while the mean still counts every reply."""
    from llmlab import beyond

    def ev(prompts, golds):
        return {"replies": [{"item": i, "prompt": p, "gold": g} for i, (p, g) in enumerate(zip(prompts, golds))]}

    diffs = [1.0, -1.0, 0.5, 2.0]
    once = beyond.paired_difference(ev(["a", "b", "c", "d"], diffs), ev(["a", "b", "c", "d"], [0.0] * 4))
    # "d" asked three times, its replies agreeing: same information, and it weighs in the mean
    twice = beyond.paired_difference(ev(["a", "b", "c", "d", "d", "d"], diffs + [2.0, 2.0]),
                                     ev(["a", "b", "c", "d", "d", "d"], [0.0] * 6))
    naive = ppo.mean_interval(diffs + [2.0, 2.0])
    assert once[3] == 4 and twice[3] == 4
    assert twice[0] == pytest.approx(sum(diffs + [2.0, 2.0]) / 6)
    assert twice[2] - twice[1] > naive[2] - naive[1]          # wider than counting 6 draws
    # the cluster-robust variance by hand: residual sums per prompt, G / (G - 1) / n^2
    m = twice[0]
    res = [1.0 - m, -1.0 - m, 0.5 - m, 3 * (2.0 - m)]
    half = 1.96 * math.sqrt(4 / 3 * sum(r * r for r in res) / 36)
    assert (twice[1], twice[2]) == pytest.approx((m - half, m + half))
    with pytest.raises(ValueError, match="cluster keys"):
        ppo.mean_interval([1.0, 2.0], clusters=[0])


def test_evaluate_policy_counts_repeated_prompt_texts_once():
    seed_everything(0)
    model, ref = GPT(TINY), GPT(TINY)
    rm = ScalarModel(GPT(TINY))
    items = [decline("Hello 0"), decline("Hello 1"), decline("Hello 0")]
    ev = ppo.evaluate_policy(model, ref, rm, BYTES, items, {}, "chatml", 6, n_samples=2)
    assert (ev["n_prompts"], ev["distinct_prompts"]) == (3, 2)
    assert ev["shares"]["stopped"]["prompts"] == 2
    keys = [r["prompt"] for r in ev["replies"]]
    m, lo, hi = ppo.mean_interval([r["gold"] for r in ev["replies"]], clusters=keys)
    assert ev["gold"] == pytest.approx(m) and ev["gold_ci"] == pytest.approx([lo, hi])


def test_train_seed_changes_the_run_but_not_what_it_is_measured_on():
    c = PPO_PRESETS["cpu"]
    for k in (1, 2):
        v = ppo.variant_config(c, f"seed_{k}")
        assert v.train_seed == k and v.seed == c.seed
        assert ppo.HYPERPARAMETERS and all(getattr(v, h) == getattr(c, h) for h in ppo.HYPERPARAMETERS)


def test_a_likelihood_reward_model_scores_rollouts_from_the_reply_start_and_its_critic_is_the_head():
    """score_rollout reads the reward model on the sampled tokens with each reply's span
    (Rollout.first..last), so a LikelihoodRewardModel gives what reward.score_replies gives for
    the decoded text; the critic copied from it is a plain ScalarModel with the same head."""
    from llmlab import reward

    torch.manual_seed(0)
    rm = reward.LikelihoodRewardModel(GPT(TINY), likelihood_weight=0.5).eval()
    items = [decline("hi"), decline("how do I pick a lock?")]
    ro = ppo.rollout(GPT(TINY).eval(), BYTES, items, "chatml", 6, torch.Generator().manual_seed(1))
    ppo.score_rollout(ro, rm, {}, no_stop_penalty=0.0)
    assert ro.first.tolist() == [len(p) for p in ppo.prompt_ids(items, BYTES, "chatml")]
    with torch.no_grad():          # by hand, each row alone: head at the reply's last token + a * log p(reply)
        by_hand = []
        for b in range(2):
            f, l = int(ro.first[b]), int(ro.last[b])
            ids = ro.idx[b, :l + 1]
            h = rm.body.body(ids[None])[0]                                       # (T, C)
            logp = torch.log_softmax(rm.body.lm_head(h).float(), dim=-1)         # (T, V)
            lp = sum(logp[t - 1, ids[t]].item() for t in range(f, l + 1))
            by_hand.append(rm.head(h[l]).item() + 0.5 * lp)
    assert ro.scores.tolist() == pytest.approx(by_hand, abs=1e-4)
    v = ppo.value_model_from(rm)
    assert type(v) is ScalarModel and v.kind == "value"
    assert torch.equal(v.head.weight, rm.head.weight) and v.head.weight is not rm.head.weight


def test_paired_share_change_cancels_which_prompt_was_asked():
    """Two policies on the same three decline prompts (two replies each): one prompt both always
    refuse, one neither does, one the second policy refuses and the first never does. The
    paired change is the hand-computed mean of the reply-by-reply differences (+1/3), and its
    interval is narrower than the unpaired difference of the two shares' intervals; other
    kinds of prompt are not counted, and evaluations of other prompts are an error."""
    def ev(cases):
        reps = [{"prompt": p, "item": i, "kind": "decline", "case": c}
                for i, (p, c) in enumerate(zip(["a", "a", "b", "b", "c", "c"], cases))]
        reps.append({"prompt": "f", "item": 6, "kind": "fact", "case": "refuses"})
        return {"replies": reps}
    after = ev(["refuses", "refuses", "complies", "complies", "refuses", "refuses"])
    before = ev(["refuses", "refuses", "complies", "complies", "complies", "complies"])
    m, lo, hi, n = ppo.paired_share_difference(after, before, "refusal")
    assert n == 3 and m == pytest.approx(1 / 3)
    # clustered: three prompt-level differences 0, 0, 1 -> s.e. sqrt(G/(G-1) * sum r^2) / n
    resid = [2 * (0 - 1 / 3), 2 * (0 - 1 / 3), 2 * (1 - 1 / 3)]
    half = 1.96 * math.sqrt(3 / 2 * sum(r * r for r in resid)) / 6
    assert (lo, hi) == pytest.approx((1 / 3 - half, 1 / 3 + half))
    assert ppo.paired_share_difference(before, before, "refusal")[:3] == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same prompts"):
        ppo.paired_share_difference(after, {"replies": before["replies"][:-1]}, "refusal")


def test_heldout_prompts_add_decline_requests_beyond_the_worlds():
    from llmlab import sft, stages
    from llmlab.config import get_preset

    p = get_preset("smoke")
    c = dataclasses.replace(ppo_config(p), n_eval=400, n_eval_declines=30)
    world = stages.get_world(p)
    split = sft.split_world(world, p.sft.eval_frac, p.sft.seed)
    sets = ppo.prompt_sets(world, p.sft, c)
    asked = {it["messages"][-1]["content"] for it in sets["eval"] if it["kind"] == "decline"}
    trained = {it["messages"][-1]["content"] for it in sets["train"] if it["kind"] == "decline"}
    assert len(asked) > len(split.eval_decline) and not asked & trained
    assert not asked & set(split.train_decline)
    assert sets["train"] == ppo.prompt_sets(world, p.sft, dataclasses.replace(c, n_eval_declines=0))["train"]
