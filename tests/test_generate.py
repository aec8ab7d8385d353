"""Generation (notebook 02): greedy, sampling filters, KV cache == no cache, stop at EOT."""
import dataclasses

import pytest
import torch
from hypothesis import given, settings, strategies as st

from llmlab.config import ModelConfig
from llmlab.generate import filter_logits, generate, generate_greedy, sample_next
from llmlab.model import GPT

CFG = ModelConfig(vocab_size=50, block_size=12, n_layer=2, n_head=2, n_embd=16)


def test_filter_by_hand():
    l = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert filter_logits(l, top_k=2).tolist() == [[-float("inf"), 3.0, 2.0, -float("inf")]]
    # probabilities of [3, 2, 1, 0] logits: .64 .24 .09 .03 -> top_p=0.8 keeps the first two
    kept = filter_logits(l, top_p=0.8)
    assert torch.isfinite(kept).tolist() == [[False, True, True, False]]
    assert torch.isfinite(filter_logits(l, top_p=0.5)).sum() == 1   # the top token always stays
    with pytest.raises(ValueError, match="top_p"):
        filter_logits(l, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        sample_next(l, temperature=-1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), k=st.integers(1, 20), p=st.floats(0.05, 1.0))
def test_samples_stay_inside_the_filters(seed, k, p):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 20, generator=g) * 3
    tok = sample_next(logits, temperature=0.7, top_k=k, top_p=p, generator=g)
    allowed = torch.isfinite(filter_logits(logits / 0.7, k, p))
    assert allowed.gather(1, tok).all()
    assert (allowed.sum(-1) <= k).all()


def test_temperature_zero_and_low_temperature_are_greedy():
    torch.manual_seed(0)
    m = GPT(CFG).eval()
    idx = torch.randint(0, 50, (2, 3))
    greedy = generate_greedy(m, idx, 15)
    assert torch.equal(generate(m, idx, 15, temperature=0), greedy)
    assert torch.equal(generate(m, idx, 15, temperature=1e-4, generator=torch.Generator().manual_seed(1)), greedy)
    assert torch.equal(generate(m, idx, 15, top_k=1, generator=torch.Generator().manual_seed(1)), greedy)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_kv_cache_equals_no_cache(positions):
    torch.manual_seed(0)
    m = GPT(dataclasses.replace(CFG, positions=positions)).eval()
    idx = torch.randint(0, 50, (3, 4))
    # 20 new tokens: runs past block_size=12, so the sliding window is covered too
    for kw in ({"temperature": 0}, {"temperature": 1.0, "top_k": 10}, {"temperature": 0.8, "top_p": 0.9}):
        a = generate(m, idx, 20, use_cache=True, generator=torch.Generator().manual_seed(5), **kw)
        b = generate(m, idx, 20, use_cache=False, generator=torch.Generator().manual_seed(5), **kw)
        assert torch.equal(a, b), kw
        assert a.shape == (3, 24)
    # the cached logits themselves match the full forward pass
    cache = m.new_cache()
    seq = torch.randint(0, 50, (1, 9))
    full, _ = m(seq)
    step1, _ = m(seq[:, :5], cache=cache)
    step2, _ = m(seq[:, 5:], cache=cache)
    torch.testing.assert_close(torch.cat([step1, step2], 1), full, atol=1e-5, rtol=1e-5)


def test_stops_at_eot():
    torch.manual_seed(0)
    m = GPT(CFG).eval()
    idx = torch.randint(0, 50, (1, 3))
    free = generate(m, idx, 10, temperature=0)
    eot = int(free[0, 5])   # make the third generated token the "end of text"
    out = generate(m, idx, 10, temperature=0, eot_id=eot)
    assert out[0, -1].item() == eot
    assert out.size(1) == 3 + [int(t) for t in free[0, 3:]].index(eot) + 1
    # in a batch, finished rows are padded with eot until every row is done: take as "eot" a
    # token row 0 samples at its third step, so that row is sure to finish early
    prompts = torch.randint(0, 50, (4, 3))
    free = generate(m, prompts, 10, temperature=1.0, generator=torch.Generator().manual_seed(0))
    eot = int(free[0, 5])
    batch = generate(m, prompts, 10, temperature=1.0, eot_id=eot,
                     generator=torch.Generator().manual_seed(0))
    rows = batch[:, 3:].tolist()
    assert eot in rows[0] and rows[0].index(eot) <= 2
    for row in rows:
        if eot in row:
            i = row.index(eot)
            assert all(t == eot for t in row[i:])
