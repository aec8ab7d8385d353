"""Training (notebook 02): schedule, optimiser groups, a short run that learns, exact resume."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from llmlab.config import ModelConfig, TrainConfig
from llmlab.device import seed_everything
from llmlab.model import GPT
from llmlab.train import (configure_optimizer, estimate_loss, load_checkpoint, lr_at, mfu,
                          param_groups, save_checkpoint, train)

CFG = ModelConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32)


WORDS = np.random.default_rng(0).integers(0, 32, size=(8, 4))


def pattern_tokens(n: int, seed: int = 0) -> np.ndarray:
    """A learnable stream: 8 fixed 'words' of 4 tokens in a random order (``seed``), so most
    next tokens are determined by the previous one."""
    rng = np.random.default_rng(seed)
    return WORDS[rng.integers(0, 8, size=n // 4)].reshape(-1).astype(np.uint16)


def test_lr_schedule_by_hand():
    c = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_frac=0.1)
    assert lr_at(0, c) == pytest.approx(0.1)
    assert lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(60, c) == pytest.approx(0.55)     # halfway down the cosine
    assert lr_at(110, c) == pytest.approx(0.1)
    assert lr_at(500, c) == pytest.approx(0.1)


@settings(max_examples=50, deadline=None)
@given(warm=st.integers(0, 50), extra=st.integers(1, 500), lr=st.floats(1e-5, 1.0),
       frac=st.floats(0.0, 1.0))
def test_lr_schedule_properties(warm, extra, lr, frac):
    c = TrainConfig(lr=lr, warmup_steps=warm, max_steps=warm + extra, min_lr_frac=frac)
    lrs = [lr_at(s, c) for s in range(c.max_steps + 3)]
    assert all(0 <= x <= lr + 1e-12 for x in lrs)
    assert all(x >= lr * frac - 1e-12 for x in lrs[warm:])                             # the floor
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:warm], lrs[1:warm + 1]))          # warmup rises
    assert all(a >= b - 1e-12 for a, b in zip(lrs[warm:], lrs[warm + 1:]))          # then falls


def test_decay_groups():
    m = GPT(CFG)
    decay, keep = param_groups(m, 0.1)
    names = {id(p): n for n, p in m.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in keep["params"]}
    assert all(n.endswith("weight") and ("c_attn" in n or "c_fc" in n or "c_proj" in n)
               for n in decayed)
    assert "wte.weight" in kept and "wpe.weight" in kept and "ln_f.weight" in kept
    assert len(decayed) + len(kept) == len(list(m.parameters()))   # every parameter, once
    opt = configure_optimizer(m, TrainConfig(weight_decay=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_optimizer_matches_reference_adamw():
    """One step of our configured AdamW equals torch's AdamW applied to the same groups by hand."""
    torch.manual_seed(0)
    m1 = GPT(CFG)
    m2 = GPT(CFG)
    m2.load_state_dict(m1.state_dict())
    cfg = TrainConfig(lr=1e-2, weight_decay=0.5)
    o1 = configure_optimizer(m1, cfg)
    decay = [p for n, p in m2.named_parameters() if p.dim() == 2 and "wte" not in n and "wpe" not in n]
    keep = [p for n, p in m2.named_parameters() if not (p.dim() == 2 and "wte" not in n and "wpe" not in n)]
    o2 = torch.optim.AdamW([{"params": decay, "weight_decay": 0.5}, {"params": keep, "weight_decay": 0.0}],
                           lr=1e-2, betas=(0.9, 0.95))
    x = torch.randint(0, 32, (2, 16))
    for m, o in ((m1, o1), (m2, o2)):
        m(x, x.roll(1, 1))[1].backward()
        o.step()
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, msg=n)


def test_short_training_lowers_val_loss_and_changes_every_parameter():
    seed_everything(0)
    data = pattern_tokens(20_000)
    val = pattern_tokens(4_000, seed=1)   # same words, another order
    m = GPT(CFG)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    cfg = TrainConfig(batch_size=8, max_steps=60, lr=3e-3, warmup_steps=5, eval_every=30,
                      eval_batches=4)
    res = train(m, data, val, cfg, device="cpu")
    first, last = res.val_losses[0][1], res.val_losses[-1][1]
    assert [s for s, _ in res.val_losses] == [0, 30, 60]
    assert last < first - 1.0, (first, last)
    for n, p in m.named_parameters():
        assert not torch.equal(p, before[n]), f"{n} did not change"
    assert res.steps == 60 and len(res.train_losses) == 60 and res.tokens == 60 * 8 * 16
    assert res.tokens_per_sec > 0 and 0 < res.mfu


def test_grad_accumulation_equals_big_batch():
    """2 micro-batches of 4 give the same update as 1 batch of 8 (same windows, mean loss)."""
    data = pattern_tokens(5_000)
    results = []
    for bs, acc in ((8, 1), (4, 2)):
        seed_everything(0)
        m = GPT(CFG)
        gen_batches = []

        def batch_fn(d, b, g, _log=gen_batches):
            from llmlab.packing import get_batch
            if d is not data:   # validation batches
                return get_batch(d, b, 16, generator=g)
            # both runs see the same 8 windows: draw 8 once per step, hand out halves
            if not _log or _log[-1][1] == 0:
                from llmlab.packing import get_batch
                x, y = get_batch(d, 8, 16, generator=g)
                _log.append([(x, y), 8])
            (x, y), left = _log[-1]
            i = 8 - left
            _log[-1][1] -= b
            return x[i:i + b], y[i:i + b]

        cfg = TrainConfig(batch_size=bs, grad_accum=acc, max_steps=3, warmup_steps=1,
                          eval_every=100, eval_batches=1)
        train(m, data, data.copy(), cfg, device="cpu", batch_fn=batch_fn)
        results.append(torch.cat([p.flatten() for p in m.parameters()]))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-4)


def test_resume_equals_uninterrupted(tmp_path):
    data = pattern_tokens(10_000)
    cfg = TrainConfig(batch_size=4, max_steps=12, warmup_steps=2, eval_every=4, eval_batches=2, lr=1e-2)
    dropout_cfg = dataclasses.replace(CFG, dropout=0.1)   # random state must resume too
    seed_everything(0)
    full = train(GPT(dropout_cfg), data, data, cfg, device="cpu")
    seed_everything(0)
    ck = tmp_path / "ckpt.pt"
    part = train(GPT(dropout_cfg), data, data, cfg, device="cpu", checkpoint_path=ck, stop_after=7)
    assert part.steps == 7 and ck.exists()
    seed_everything(123)   # a fresh process: different global state, same checkpoint
    resumed = train(GPT(dropout_cfg), data, data, cfg, device="cpu", checkpoint_path=ck, resume=True)
    assert resumed.steps == 12
    assert resumed.train_losses == full.train_losses
    assert resumed.val_losses == full.val_losses
    model, ckpt = load_checkpoint(ck)
    assert ckpt["state"]["step"] == 12 and model.config == dropout_cfg


def test_checkpoint_round_trip_and_errors(tmp_path):
    m = GPT(CFG)
    save_checkpoint(tmp_path / "m.pt", m)
    m2, _ = load_checkpoint(tmp_path / "m.pt")
    x = torch.randint(0, 32, (1, 16))
    torch.testing.assert_close(m(x)[0], m2(x)[0])
    assert not list(tmp_path.glob(".m.pt.*"))   # no temporary file left behind
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="resume=True"):
        train(m, pattern_tokens(1000), pattern_tokens(1000), TrainConfig(max_steps=1), device="cpu",
              checkpoint_path=tmp_path / "nope.pt", resume=True)


def test_estimate_loss_is_repeatable_and_mfu_by_hand():
    m = GPT(CFG)
    data = pattern_tokens(3000)
    cfg = TrainConfig(batch_size=4, eval_batches=3)
    assert estimate_loss(m, data, cfg) == estimate_loss(m, data, cfg)
    assert mfu(6e6, 1e4, 1.2e11) == pytest.approx(0.5)


def test_loss_over_covers_every_token_once():
    """``loss_over`` equals the summed cross-entropy of every next token, window by window."""
    torch.manual_seed(0)
    m = GPT(CFG)
    data = pattern_tokens(200)[:37]      # 36 predictions: two full windows of 16 and a tail of 4
    t = torch.from_numpy(data.astype(np.int64))
    total = 0.0
    for s in range(0, 36, 16):
        x = t[s:min(s + 16, 36)]
        logits, _ = m(x[None])
        total += torch.nn.functional.cross_entropy(logits[0], t[s + 1:s + 1 + len(x)], reduction="sum").item()
    from llmlab.train import bits_per_byte, loss_over
    assert loss_over(m, data, batch_size=1) == pytest.approx(total / 36, rel=1e-5)
    assert bits_per_byte(math.log(2), 100, 400) == pytest.approx(0.25)


@pytest.mark.parametrize("how", ["return False", "raise StopIteration"])
def test_callback_stops_the_run_cleanly_with_a_checkpoint(tmp_path, how):
    data = pattern_tokens(5_000)
    cfg = TrainConfig(batch_size=4, max_steps=10, warmup_steps=1, eval_every=100, eval_batches=1)
    seen = []

    def callback(step, info):
        seen.append(step)
        if step == 3:
            if how == "raise StopIteration":
                raise StopIteration
            return False
        return None                     # None (the usual return) never stops a run

    seed_everything(0)
    ck = tmp_path / "ckpt.pt"
    res = train(GPT(CFG), data, data, cfg, device="cpu", callback=callback, checkpoint_path=ck)
    assert seen == [1, 2, 3] and res.steps == 3 and res.stopped_early
    assert len(res.train_losses) == 3
    _, ckpt = load_checkpoint(ck)
    assert ckpt["state"]["step"] == 3                       # resumable from where it stopped
    seed_everything(0)
    full = train(GPT(CFG), data, data, cfg, device="cpu")
    resumed = train(GPT(CFG), data, data, cfg, device="cpu", checkpoint_path=ck, resume=True)
    assert not full.stopped_early and resumed.steps == 10
    assert resumed.train_losses == full.train_losses


def test_command_line_user_error_is_one_line_exit_2(capsys):
    from llmlab.__main__ import main

    assert main(["train", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown preset 'nope'" in err and "Traceback" not in err
    assert main(["train", "--preset", "smoke", "--train-bin", "/nonexistent/train.bin"]) == 2
    assert "no token file at /nonexistent/train.bin" in capsys.readouterr().err
    assert main(["fly"]) == 2
    assert "expected a command (train, ppo)" in capsys.readouterr().err


def test_simple_loop_is_the_oracle_of_the_full_loop():
    """Same init, same batches, fp32, constant rate, no decay or clipping: the same weights."""
    from llmlab.train import train_simple

    data = pattern_tokens(5_000)
    seed_everything(0)
    simple = GPT(CFG)
    full = GPT(CFG)
    full.load_state_dict(simple.state_dict())
    losses = train_simple(simple, data, steps=5, lr=3e-3, batch_size=4, seed=7)
    cfg = TrainConfig(batch_size=4, max_steps=5, lr=3e-3, warmup_steps=0, min_lr_frac=1.0,
                      weight_decay=0.0, grad_clip=0.0, eval_every=100, eval_batches=1, seed=7)
    res = train(full, data, data, cfg, device="cpu")
    np.testing.assert_allclose(res.train_losses, losses, rtol=1e-6, atol=1e-6)
    for (name, a), b in zip(simple.named_parameters(), full.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert losses[-1] < losses[0]                       # and it trained: the check can fail


def test_timed_returns_the_result_and_the_median():
    import time

    from llmlab import tokenizer
    from llmlab.device import timed

    assert tokenizer.timed is timed                         # one timing helper
    delays = iter([0.0, 0.05, 0.01])
    calls = []

    def work(tag):
        calls.append(tag)
        time.sleep(next(delays))
        return tag

    result, seconds = timed(work, "x", repeats=3)
    assert result == "x" and calls == ["x"] * 3
    assert 0.009 < seconds < 0.045                          # the median, not the mean or the max
