"""Notebook 07's DPO: the loss by hand and its known properties, the toy closed-form check,
reply log-probabilities under padding, and a short run that must raise the held-out margin."""
import copy
import dataclasses
import math

import pytest
import torch

from llmlab import dpo
from llmlab.config import DPO_PRESETS, DPOConfig, ModelConfig, TrainConfig, dpo_config
from llmlab.model import GPT, IGNORE_INDEX, sequence_logprobs
from llmlab.train import fine_tune_config


def test_loss_against_a_hand_computation():
    pc, pr = torch.tensor([-2.0, -5.0]), torch.tensor([-3.0, -4.0])
    rc, rr = torch.tensor([-2.5, -4.0]), torch.tensor([-2.5, -4.5])
    beta = 0.5
    # h = (pc - rc) - (pr - rr) = [0.5 - (-0.5), -1 - 0.5] = [1.0, -1.5]
    by_hand = [math.log(1 + math.exp(-beta * 1.0)), math.log(1 + math.exp(beta * 1.5))]
    got = dpo.dpo_loss(pc, pr, rc, rr, beta)
    assert got.tolist() == pytest.approx(by_hand, abs=1e-6)
    eps = 0.2   # conservative: a flipped label with probability eps
    cd = [(1 - eps) * math.log(1 + math.exp(-beta * h)) + eps * math.log(1 + math.exp(beta * h))
          for h in (1.0, -1.5)]
    assert dpo.dpo_loss(pc, pr, rc, rr, beta, "cdpo", eps).tolist() == pytest.approx(cd, abs=1e-6)
    ipo = [(h - 1 / (2 * beta)) ** 2 for h in (1.0, -1.5)]
    assert dpo.dpo_loss(pc, pr, rc, rr, beta, "ipo").tolist() == pytest.approx(ipo, abs=1e-6)
    with pytest.raises(ValueError, match="loss_type"):
        dpo.dpo_loss(pc, pr, rc, rr, beta, "kto")


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0])
def test_loss_is_log2_when_policy_equals_reference(beta):
    g = torch.Generator().manual_seed(0)
    lw, ll = -20 * torch.rand(50, generator=g), -20 * torch.rand(50, generator=g)
    for loss_type in ("dpo", "cdpo"):
        losses = dpo.dpo_loss(lw, ll, lw, ll, beta, loss_type, 0.3)
        assert torch.allclose(losses, torch.full_like(losses, math.log(2)))
    # and the implicit rewards are all zero
    assert torch.all(dpo.implicit_reward(lw, lw, beta) == 0)


def test_gradient_weight_is_sigmoid_of_the_reward_error():
    """DPO paper, Sec. 4: dL/dlog pi(y_w) = -beta sigma(r_l - r_w), with r = beta log pi/pi_ref."""
    g = torch.Generator().manual_seed(1)
    B, beta = 16, 0.3
    pc, pr = (-10 * torch.rand(B, generator=g)).requires_grad_(), (-10 * torch.rand(B, generator=g)).requires_grad_()
    rc, rr = -10 * torch.rand(B, generator=g), -10 * torch.rand(B, generator=g)
    dpo.dpo_loss(pc, pr, rc, rr, beta).sum().backward()
    r_w, r_l = beta * (pc.detach() - rc), beta * (pr.detach() - rr)
    weight = torch.sigmoid(r_l - r_w)
    assert torch.allclose(pc.grad, -beta * weight, atol=1e-6)
    assert torch.allclose(pr.grad, beta * weight, atol=1e-6)
    # a pair the implicit reward already ranks right by a wide margin gets almost no gradient
    far = torch.tensor([0.0], requires_grad=True)
    dpo.dpo_loss(far, torch.zeros(1), torch.tensor([-20.0]), torch.zeros(1), beta).sum().backward()
    assert 0 > far.grad.item() > -beta * 0.01                  # beta * sigmoid(-6)


def test_ipo_is_minimal_at_its_target_margin():
    beta = 0.25
    h = torch.linspace(-4, 8, 1201)
    z = torch.zeros_like(h)
    losses = dpo.dpo_loss(h, z, z, z, beta, "ipo")
    assert h[losses.argmin()].item() == pytest.approx(1 / (2 * beta), abs=0.01)


# --- the derivation on a toy ----------------------------------------------------------------

REF = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)
R = torch.tensor([0.0, 1.0, -0.5, 2.0, 0.3], dtype=torch.float64)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_optimal_policy_maximises_the_kl_regularised_objective(beta):
    pi_star = dpo.toy_optimal_policy(REF, R, beta)
    best = dpo.kl_regularised_objective(pi_star, REF, R, beta)
    log_z = torch.logsumexp(REF.log() + R / beta, 0)
    assert best.item() == pytest.approx(beta * log_z.item(), abs=1e-9)     # the maximum is beta log Z
    g = torch.Generator().manual_seed(0)
    for _ in range(200):                                                   # no other policy beats it
        pi = torch.softmax(pi_star.log() + 0.5 * torch.randn(5, generator=g, dtype=torch.float64), 0)
        assert dpo.kl_regularised_objective(pi, REF, R, beta) < best
    # Eq. 5: the reward is beta log pi*/pi_ref up to a constant (beta log Z)
    implied = beta * (pi_star.log() - REF.log())
    assert torch.allclose(implied - implied[0], R - R[0], atol=1e-9)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_dpo_on_bradley_terry_pairs_recovers_the_optimal_policy(beta):
    pi_star = dpo.toy_optimal_policy(REF, R, beta)
    pi_dpo = dpo.toy_dpo(REF, dpo.toy_all_pairs(R), beta)
    assert torch.allclose(pi_dpo, pi_star, atol=1e-5)
    assert (pi_dpo - REF).abs().max() > 0.05                             # it did move
    # finitely many sampled pairs get close, not exact
    pi_s = dpo.toy_dpo(REF, dpo.toy_sampled_pairs(R, 4000, seed=0), beta)
    assert (pi_s - pi_star).abs().max() < 0.05


# --- reply log-probabilities ----------------------------------------------------------------

CFG = ModelConfig(vocab_size=32, block_size=24, n_layer=1, n_head=2, n_embd=16)
PAD = 0


def _example(prompt, reply):
    ids = [1] + prompt + [2] + reply + [3]          # 3 plays the stop token
    mask = [0] * (len(prompt) + 2) + [1] * (len(reply) + 1)
    return dpo.reply_example(ids, mask)


def _alone(model, ex):
    logits, _ = model(torch.tensor([ex["x"]]))
    return sequence_logprobs(logits, torch.tensor([ex["y"]])).item()


def test_reply_example_targets_only_the_reply():
    ex = _example([5, 6], [7, 8])
    assert ex["x"] == [1, 5, 6, 2, 7, 8]
    assert ex["y"] == [IGNORE_INDEX] * 3 + [7, 8, 3]


@pytest.mark.parametrize("padded", ["chosen", "rejected"])
def test_pair_logprobs_with_padding_on_either_side_equal_unpadded(padded):
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    short, long_ = _example([5, 6], [7]), _example([5, 6, 9, 10], [11, 12, 13, 14])
    pairs = [{"chosen": short, "rejected": long_} if padded == "chosen" else {"chosen": long_, "rejected": short},
             {"chosen": long_, "rejected": long_}]
    batch = dpo.collate_pairs(pairs, PAD)
    assert batch["idx"].shape == (2, 2, len(long_["x"]))
    with torch.no_grad():
        got = dpo.pair_logprobs(model, batch["idx"], batch["targets"])     # (B, 2)
        want = [[_alone(model, p["chosen"]), _alone(model, p["rejected"])] for p in pairs]
        assert torch.allclose(got, torch.tensor(want), atol=1e-5)
        # a different pad id changes nothing either
        other = dpo.collate_pairs(pairs, 31)
        assert torch.allclose(dpo.pair_logprobs(model, other["idx"], other["targets"]), got, atol=1e-5)
    # the batched scorer (sorted by length, padded per batch) agrees too
    seqs = [short, long_, _example([4], [4, 4])]
    assert dpo.reply_logprobs(model, seqs, PAD, batch_size=2) == pytest.approx(
        [_alone(model, s) for s in seqs], abs=1e-5)


# --- training -------------------------------------------------------------------------------


def _toy_pairs(n, seed):
    """Prompts of random tokens; the chosen reply is always [7, 8], the rejected [9, 10]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        prompt = torch.randint(11, 30, (3,), generator=g).tolist()
        out.append({"chosen": _example(prompt, [7, 8]), "rejected": _example(prompt, [9, 10])})
    return out


def test_objective_starts_at_log2_and_zero_margin():
    torch.manual_seed(0)
    model = GPT(CFG)
    loss_fn = dpo.dpo_objective(copy.deepcopy(model), beta=0.1)
    loss, m = loss_fn(model, dpo.collate_pairs(_toy_pairs(8, 0), PAD))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert m["margin"] == pytest.approx(0.0, abs=1e-6) and m["accuracy"] == 0.0


def test_a_short_dpo_run_raises_the_heldout_margin():
    torch.manual_seed(0)
    policy = GPT(CFG)
    ref = copy.deepcopy(policy)
    train_pairs, val_pairs = _toy_pairs(64, 1), _toy_pairs(32, 2)
    before = dpo.implicit_accuracy(policy, ref, val_pairs, PAD)
    cfg = fine_tune_config(TrainConfig(), lr=3e-3, max_steps=25, batch_size=8, eval_every=25,
                           eval_batches=2)
    res = dpo.train_dpo(policy, ref, train_pairs, val_pairs, cfg, PAD, beta=0.5, device="cpu",
                        progress=False)
    after = dpo.implicit_accuracy(policy, ref, val_pairs, PAD)
    assert max(abs(m) for m in before["margins"]) < 1e-5
    assert min(after["margins"]) > 0.5                       # every held-out pair, by a margin
    assert after["correct"] == after["n"] == 32
    assert res.train_losses[-1] < res.train_losses[0] < math.log(2) + 1e-4
    assert res.val_metrics[-1][1]["margin"] > res.val_metrics[0][1]["margin"]
    # the reference never moved
    assert all(not p.requires_grad for p in ref.parameters())


def test_state_memory_counts_two_models_and_adam_state():
    m = GPT(CFG)
    P = sum(p.numel() for p in m.parameters()) * 4                         # fp32 bytes
    mem = dpo.state_memory([m], [copy.deepcopy(m)], TrainConfig())
    assert mem["params"] == 2 * P and mem["grads"] == P and mem["optimizer"] == 2 * P
    assert mem["total"] == 5 * P and mem["models"] == 2


def test_variants_and_config():
    c = dpo_config("cpu")
    runs = dpo.variants(c)
    assert {"main", "ipo", "conservative", "small_beta", "on_policy", "off_policy"} <= set(runs)
    assert {runs[dpo.beta_variant(b)]["beta"] if b != c.beta else runs["main"]["beta"] for b in c.betas} == set(c.betas)
    assert runs["small_beta"]["beta"] < min(c.betas)
    assert runs["conservative"]["label_smoothing"] == c.label_smoothing > 0
    assert set(DPO_PRESETS) == {"smoke", "cpu", "gpu"}
    pairs = [{"category": "on_policy"}, {"category": "facts"}, {"category": "padding"}]
    assert len(dpo.select_pairs(pairs, "on_policy")) == 1 and len(dpo.select_pairs(pairs, "off_policy")) == 2
    # the repeats of the main run differ from it in their batch-order seed only
    repeats = [runs[f"seed_{s}"] for s in c.seeds if s != c.seed]
    assert repeats and all({k: v for k, v in r.items() if k != "seed"} == runs["main"] for r in repeats)
    assert all({k: v for k, v in runs[f"on_policy_seed_{s}"].items() if k != "seed"} == runs["on_policy"]
               for s in c.seeds if s != c.seed)
    assert sorted(r["seed"] for r in repeats) == sorted(s for s in c.seeds if s != c.seed)
    assert "seed" not in runs["main"]


def test_every_dpo_config_field_has_a_comment():
    import dataclasses
    import inspect

    src = inspect.getsource(DPOConfig)
    for f in dataclasses.fields(DPOConfig):
        line = next(l for l in src.splitlines() if l.strip().startswith(f"{f.name}:"))
        assert "#" in line, f"DPOConfig.{f.name} has no comment"
    assert set(dpo.HYPERPARAMETERS) <= {f.name for f in dataclasses.fields(DPOConfig)}


def test_raw_pairs_are_encoded_when_drawn_like_encoded_ones():
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer([])                              # one token per byte plus the special tokens
    pairs = [{"messages": [{"role": "user", "content": f"Capital of X{i}?"}],
              "chosen": "It is Kelton.", "rejected": "I hope this helps. " * (1 + i % 3)}
             for i in range(6)]
    pairs.append({"messages": [{"role": "user", "content": "?"}], "chosen": "x" * 500, "rejected": "y"})
    enc, kept = dpo.encode_pairs(pairs, tok, "chatml", 128)
    assert len(kept) == 6                            # the too-long pair is dropped
    assert enc[0]["chosen"]["y"][-1] == tok.special_tokens["<|im_end|>"]   # the reply ends at the stop token
    fn = dpo.dpo_batch_fn(tok.pad_id, tok, "chatml", 128)
    raw = fn(pairs, 32, torch.Generator().manual_seed(0))
    assert raw["idx"].shape[:2] == (32, 2) and raw["idx"].shape[2] <= 127
    # every drawn row is one of the encodable pairs, encoded exactly as encode_pairs does
    rows = {tuple(e["chosen"]["x"]) for e in enc}
    for b in range(32):
        x = raw["idx"][b, 0][raw["idx"][b, 0] != tok.pad_id].tolist()
        assert tuple(x) in rows


def test_build_dpo_saves_the_policy_and_its_curves(tmp_path):
    from llmlab.tokenizer import Tokenizer
    from llmlab.train import load_checkpoint

    tok = Tokenizer([])
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)
    pairs = [{"messages": [{"role": "user", "content": f"Q{i}?"}], "chosen": "Yes.", "rejected": "No!",
              "category": "facts"} for i in range(20)]
    c = dataclasses.replace(DPO_PRESETS["smoke"], max_steps=4, eval_every=2)
    torch.manual_seed(0)
    info = dpo.build_dpo(tmp_path, "main", c, TrainConfig(), cfg, "chatml", tok,
                         {"train": pairs, "val": pairs[:6]}, GPT(cfg), device="cpu", progress=False)
    assert (tmp_path / "model.pt").exists() and load_checkpoint(tmp_path / "model.pt")[0].config == cfg
    assert [r["step"] for r in info["curve"]] == [0, 2, 4] and len(info["train_losses"]) == 4
    assert info["val_n"] == 6 == len(info["val_margins"]) and info["beta"] == c.beta
    with pytest.raises(ValueError, match="no on_policy training pairs"):
        dpo.build_dpo(tmp_path, "on_policy", c, TrainConfig(), cfg, "chatml", tok,
                      {"train": pairs, "val": pairs[:6]}, GPT(cfg), device="cpu", progress=False)


def test_a_seed_repeat_trains_the_main_run_on_another_batch_order(tmp_path):
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer([])
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16)
    pairs = [{"messages": [{"role": "user", "content": f"Q{i}?"}], "chosen": "Yes." * (1 + i % 3),
              "rejected": "No!", "category": "facts"} for i in range(40)]
    c = dataclasses.replace(DPO_PRESETS["smoke"], max_steps=3, eval_every=3, seeds=(1,))
    torch.manual_seed(0)
    sft_model = GPT(cfg)
    out = {}
    for v in ("main", "seed_1"):
        (tmp_path / v).mkdir()
        out[v] = dpo.build_dpo(tmp_path / v, v, c, TrainConfig(), cfg, "chatml", tok,
                               {"train": pairs, "val": pairs[:6]}, sft_model, device="cpu", progress=False)
    assert out["seed_1"]["seed"] == 1 and out["seed_1"]["beta"] == out["main"]["beta"]
    assert out["seed_1"]["train_losses"] != out["main"]["train_losses"]     # other batches
