"""One loop, many objectives: a pairwise (reward-model-like) objective trained through
``llmlab.train.train``, scalar heads, sequence log-probabilities, checkpoint kinds, NaN stops."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmlab.config import ModelConfig, TrainConfig
from llmlab.device import seed_everything
from llmlab.model import (GPT, IGNORE_INDEX, ScalarModel, gather_at, sequence_logprobs)
from llmlab.train import fine_tune_config, load_checkpoint, save_checkpoint, train

CFG = ModelConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16)


def pairs(n: int, seed: int):
    """Toy preferences: the sequence with more copies of token 3 is preferred."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 16, (n, 8), generator=g)
    b = torch.randint(0, 16, (n, 8), generator=g)
    a_wins = (a == 3).sum(1) >= (b == 3).sum(1)
    chosen = torch.where(a_wins[:, None], a, b)
    rejected = torch.where(a_wins[:, None], b, a)
    return chosen, rejected


def pair_batch(data, batch_size, generator):
    chosen, rejected = data
    ix = torch.randint(len(chosen), (batch_size,), generator=generator)
    return chosen[ix], rejected[ix]


def pairwise_loss(model, batch):
    chosen, rejected = batch
    last = torch.full((chosen.size(0),), chosen.size(1) - 1)
    r_w = gather_at(model(chosen), last)                                       # (B,)
    r_l = gather_at(model(rejected), last)                                     # (B,)
    loss = -F.logsigmoid(r_w - r_l).mean()
    return loss, {"accuracy": (r_w > r_l).float().mean().item()}


@torch.no_grad()
def pair_accuracy(model, data):
    chosen, rejected = data
    keep = (chosen == 3).sum(1) != (rejected == 3).sum(1)                      # no ties
    return (model(chosen[keep])[:, -1] > model(rejected[keep])[:, -1]).float().mean().item()


def test_pairwise_objective_trains_through_the_shared_loop():
    seed_everything(0)
    model = ScalarModel(GPT(CFG))
    train_pairs, val_pairs = pairs(512, 0), pairs(256, 1)
    before = pair_accuracy(model, val_pairs)
    cfg = fine_tune_config(TrainConfig(), lr=3e-3, max_steps=120, batch_size=32, eval_every=40,
                           eval_batches=4)
    res = train(model, train_pairs, val_pairs, cfg, device="cpu", batch_fn=pair_batch,
                loss_fn=pairwise_loss)
    after = pair_accuracy(model, val_pairs)
    assert res.steps == 120
    assert after > 0.8 and after > before + 0.2
    assert "accuracy" in res.train_metrics[-1] and res.val_metrics[-1][0] == 120
    assert res.val_losses[-1][1] < res.val_losses[0][1]


def test_scalar_model_checkpoint_rebuilds_its_kind(tmp_path):
    model = ScalarModel(GPT(CFG), kind="value")
    save_checkpoint(tmp_path / "v.pt", model)
    loaded, ckpt = load_checkpoint(tmp_path / "v.pt")
    assert isinstance(loaded, ScalarModel) and loaded.kind == "value" and ckpt["kind"] == "value"
    x = torch.randint(0, 16, (2, 8))
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="holds a 'value' model"):
        load_checkpoint(tmp_path / "v.pt", GPT(CFG))


def test_truncated_checkpoint_names_the_file(tmp_path):
    save_checkpoint(tmp_path / "m.pt", GPT(CFG))
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="m.pt is truncated or corrupted"):
        load_checkpoint(tmp_path / "m.pt")


def test_nan_loss_stops_training_with_the_step():
    model = GPT(CFG)

    def nan_after_3(m, batch):
        x, y = batch
        _, loss = m(x, y)
        nan_after_3.calls += 1
        return (loss * float("nan") if nan_after_3.calls > 3 else loss), {}
    nan_after_3.calls = 0
    data = torch.randint(0, 16, (400,)).numpy().astype("uint16")
    cfg = fine_tune_config(TrainConfig(), lr=1e-3, max_steps=10, batch_size=4, eval_batches=1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match="optimiser step 3"):
        train(model, data, data, cfg, device="cpu", loss_fn=nan_after_3)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sequence_logprobs_by_hand_and_with_padding_after_the_reply():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))    # (1, 2, 3)
    t = torch.tensor([[0, 2]])
    assert sequence_logprobs(logits, t).item() == pytest.approx(math.log(0.5) + math.log(0.8), abs=1e-5)
    assert sequence_logprobs(logits, t, average=True).item() == pytest.approx(
        (math.log(0.5) + math.log(0.8)) / 2, abs=1e-5)
    # a reply's log-probability does not change when padding follows it
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=16, block_size=12, n_layer=1, n_head=2, n_embd=16)).eval()
    seq = torch.tensor([5, 6, 7, 8, 9])
    prompt_len, pad = 2, 0
    def lp(ids, start):                          # targets: the reply tokens only
        y = torch.full_like(ids, IGNORE_INDEX)
        y[start + prompt_len - 1:start + len(seq) - 1] = ids[start + prompt_len:start + len(seq)]
        return sequence_logprobs(m(ids[None])[0], y[None]).item()
    right = torch.cat([seq, torch.full((3,), pad)])
    plain = lp(seq, 0)
    assert lp(right, 0) == pytest.approx(plain, abs=1e-5)
    with torch.no_grad():
        assert plain < 0


# --------------------------------------------------------------------------------------------
# The loop's guarantees hold for a non-LM objective too
# --------------------------------------------------------------------------------------------

DROPOUT_CFG = ModelConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1)


def test_pairwise_resume_equals_uninterrupted(tmp_path):
    data = pairs(256, 0)
    cfg = fine_tune_config(TrainConfig(), lr=3e-3, max_steps=10, batch_size=8, eval_every=4,
                           eval_batches=2)
    seed_everything(0)
    full = train(ScalarModel(GPT(DROPOUT_CFG)), data, data, cfg, device="cpu", batch_fn=pair_batch,
                 loss_fn=pairwise_loss)
    seed_everything(0)
    ck = tmp_path / "rm.pt"
    part = train(ScalarModel(GPT(DROPOUT_CFG)), data, data, cfg, device="cpu", batch_fn=pair_batch,
                 loss_fn=pairwise_loss, checkpoint_path=ck, stop_after=6)
    assert part.steps == 6
    seed_everything(123)
    resumed = train(ScalarModel(GPT(DROPOUT_CFG)), data, data, cfg, device="cpu",
                    batch_fn=pair_batch, loss_fn=pairwise_loss, checkpoint_path=ck, resume=True)
    assert resumed.steps == 10
    assert resumed.train_losses == full.train_losses
    assert resumed.train_metrics == full.train_metrics and resumed.val_losses == full.val_losses
    assert len(set(full.train_losses)) > 1


def test_pairwise_grad_accumulation_equals_big_batch():
    """4 + 4 pairs accumulated give the update of one batch of 8 (pair_batch draws 8 indices
    from the generator either way). A small rate: Adam turns float-rounding noise in a
    near-zero gradient into a step of size lr, so the tolerance scales with it."""
    data = pairs(256, 0)
    weights = []
    for bs, acc in ((8, 1), (4, 2)):
        seed_everything(0)
        model = ScalarModel(GPT(CFG))
        cfg = TrainConfig(batch_size=bs, grad_accum=acc, max_steps=3, warmup_steps=1, lr=1e-3,
                          eval_every=100, eval_batches=1)
        train(model, data, data, cfg, device="cpu", batch_fn=pair_batch, loss_fn=pairwise_loss)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], atol=1e-5, rtol=1e-4)
    seed_everything(0)
    assert not torch.allclose(weights[0], torch.cat([p.flatten() for p in ScalarModel(GPT(CFG)).parameters()]))


def test_pairwise_two_processes_match_one(tmp_path):
    """DDP = one process for the pairwise objective: 2 processes x 4 pairs == 1 x 8."""
    import json
    from pathlib import Path

    from launch import torchrun2

    out = tmp_path / "ddp.json"
    torchrun2(str(Path(__file__).resolve().parent / "ddp_pairwise.py"), str(out), timeout=240)
    ddp = json.loads(out.read_text())
    assert ddp["world_size"] == 2
    seed_everything(0)
    single = train(ScalarModel(GPT(CFG)), pairs(256, 0), pairs(64, 1), ddp_config(batch_size=8),
                   device="cpu", batch_fn=pair_batch, loss_fn=pairwise_loss)
    assert len(set(round(x, 4) for x in single.train_losses)) > 1
    assert len(ddp["train_losses"]) == len(single.train_losses) == 4
    assert max(abs(a - b) for a, b in zip(ddp["train_losses"], single.train_losses)) < 2e-5


def ddp_config(batch_size: int) -> TrainConfig:
    return fine_tune_config(TrainConfig(), lr=3e-3, max_steps=4, batch_size=batch_size,
                            eval_batches=1)
