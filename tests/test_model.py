"""The model of notebook 02: attention oracle, causality, RoPE, sizes, init."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from llmlab import model as M
from llmlab.config import ModelConfig, get_preset
from llmlab.model import (GPT, apply_rope, attention_naive, attention_sdpa, causal_mask,
                          rope_cos_sin)

TINY = ModelConfig(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=16)


def test_causal_mask_by_hand():
    assert causal_mask(3).int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    # two new queries at the end of four keys (a KV cache)
    assert causal_mask(2, 4).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_attention_by_hand():
    # one head, two positions, D=1: the first query sees only the first value
    q = torch.tensor([[[[1.0], [1.0]]]])
    k = torch.tensor([[[[0.0], [math.log(3.0)]]]])
    v = torch.tensor([[[[10.0], [20.0]]]])
    out = attention_naive(q, k, v)
    # position 1: weights softmax([0, ln 3]) = [1/4, 3/4] -> 10/4 + 60/4 = 17.5
    assert torch.allclose(out[0, 0, :, 0], torch.tensor([10.0, 17.5]))


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), H=st.integers(1, 3), T=st.integers(1, 9), extra=st.integers(0, 5),
       D=st.sampled_from([4, 8]), seed=st.integers(0, 10_000))
def test_explicit_mask_equals_sdpa(B, H, T, extra, D, seed):
    g = torch.Generator().manual_seed(seed)
    S = T + extra
    q = torch.randn(B, H, T, D, generator=g)
    k = torch.randn(B, H, S, D, generator=g)
    v = torch.randn(B, H, S, D, generator=g)
    torch.testing.assert_close(attention_naive(q, k, v), attention_sdpa(q, k, v),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_model_with_explicit_mask_equals_sdpa(positions):
    import dataclasses

    torch.manual_seed(0)
    m = GPT(dataclasses.replace(TINY, positions=positions)).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 16))
    a, _ = m(idx)
    b, _ = m.set_attention(use_sdpa=False)(idx)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_causality(positions):
    """Changing a future token never changes an earlier logit."""
    import dataclasses

    torch.manual_seed(1)
    m = GPT(dataclasses.replace(TINY, positions=positions)).eval()
    idx = torch.randint(0, TINY.vocab_size, (1, 16))
    base, _ = m(idx)
    for t in range(16):
        changed = idx.clone()
        changed[0, t] = (changed[0, t] + 1) % TINY.vocab_size
        out, _ = m(changed)
        assert torch.equal(out[0, :t], base[0, :t]), f"logits before position {t} changed"
        assert not torch.allclose(out[0, t], base[0, t])


def test_rope_rotation_keeps_norm_and_relative():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 6, 8, generator=g)
    cos, sin = rope_cos_sin(6, 8)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    # q.k depends only on the distance: shift both positions by 3, same dot product
    q, k = torch.randn(8, generator=g), torch.randn(8, generator=g)
    def dot(pq, pk):
        c, s = rope_cos_sin(pq + pk + 1, 8)
        rq = apply_rope(q.view(1, 1, 1, 8), c[pq:pq + 1], s[pq:pq + 1])
        rk = apply_rope(k.view(1, 1, 1, 8), c[pk:pk + 1], s[pk:pk + 1])
        return (rq * rk).sum()
    torch.testing.assert_close(dot(1, 4), dot(4, 7), atol=1e-5, rtol=1e-5)
    assert torch.equal(apply_rope(x, *rope_cos_sin(6, 8))[:, :, 0], x[:, :, 0])   # position 0


def test_param_count_matches_formula():
    cfg = get_preset("cpu").model
    m = GPT(cfg)
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    per_block = 12 * C * C + 13 * C      # attn 4C^2+4C, mlp 8C^2+5C, two LayerNorms 4C
    assert m.num_params(non_embedding=True) == L * per_block + 2 * C   # + final LayerNorm
    assert m.num_params(non_embedding=False) == m.num_params() + V * C + cfg.block_size * C
    # the head is tied: one matrix, not two
    assert m.lm_head.weight.data_ptr() == m.wte.weight.data_ptr()
    assert m.flops_per_token() == 6 * (m.num_params() + V * C) + 12 * L * cfg.block_size * C


def test_gpt2_init_and_initial_loss():
    torch.manual_seed(0)
    m = GPT(TINY)
    assert abs(m.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.005
    assert abs(m.h[0].mlp.c_proj.weight.std().item() - 0.02 / math.sqrt(4)) < 0.003
    assert torch.count_nonzero(m.h[0].attn.c_attn.bias) == 0
    idx = torch.randint(0, TINY.vocab_size, (4, 16))
    _, loss = m(idx, torch.randint(0, TINY.vocab_size, (4, 16)))
    # a fresh model is close to uniform: loss near ln(V)
    assert abs(loss.item() - math.log(TINY.vocab_size)) < 0.1


def test_ignore_index_and_clear_errors():
    m = GPT(TINY)
    idx = torch.randint(0, TINY.vocab_size, (1, 16))
    tgt = idx.clone()
    tgt[0, :8] = -100
    _, l_masked = m(idx, tgt)
    logits, _ = m(idx)
    ref = torch.nn.functional.cross_entropy(logits[0, 8:], idx[0, 8:])
    torch.testing.assert_close(l_masked, ref)
    with pytest.raises(ValueError, match="block_size=16"):
        m(torch.zeros(1, 17, dtype=torch.long))
    import dataclasses
    with pytest.raises(ValueError, match="divisible"):
        GPT(dataclasses.replace(TINY, n_head=3))
    with pytest.raises(ValueError, match="positions"):
        GPT(dataclasses.replace(TINY, positions="sinusoid"))


def test_gelu_forms_agree_where_they_should():
    """The written-out tanh formula is the fused tanh kernel (values and gradients); the exact
    erf GELU is a different function, close to it but not equal."""
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64, requires_grad=True)
    outs, grads = {}, {}
    for name, fn in M.GELU_FORMS.items():
        y = fn(x)
        (g,) = torch.autograd.grad(y.sum(), x)
        outs[name], grads[name] = y.detach(), g
    tanh_fused, exact, written = (outs[k] for k in M.GELU_FORMS)
    torch.testing.assert_close(written, tanh_fused, atol=1e-12, rtol=0)
    torch.testing.assert_close(grads[list(M.GELU_FORMS)[2]], grads[list(M.GELU_FORMS)[0]],
                               atol=1e-12, rtol=0)
    gap = (exact - tanh_fused).abs().max().item()
    assert 1e-5 < gap < 1e-3                     # the approximation's known error is ~2e-4
    model_act = M.MLP(ModelConfig(n_embd=8)).gelu(x.detach())
    torch.testing.assert_close(model_act, tanh_fused, atol=0, rtol=0)   # the model uses form 1


def test_time_forward_backward_measures_work():
    from llmlab.train import time_forward_backward
    small = time_forward_backward(lambda t: t * 2.0, (8, 8), repeats=3, n=2)
    big = time_forward_backward(lambda t: (t * 2.0).exp().sin(), (256, 1024), repeats=3, n=2)
    assert 0 < small < big
