"""GPT-2 conversion (notebook 02, "Real weights"): offline, from a randomly initialised model."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from llmlab.generate import generate  # noqa: E402
from llmlab.hf import config_from_hf, from_hf_gpt2  # noqa: E402


def tiny_gpt2(**kw):
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0, **kw)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_converted_logits_match_transformers():
    hf = tiny_gpt2()
    ours = from_hf_gpt2(hf)
    idx = torch.randint(0, 97, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(idx).logits
        got, _ = ours(idx)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    # and the explicit-mask attention path agrees too
    with torch.no_grad():
        got_naive, _ = ours.set_attention(use_sdpa=False)(idx)
    torch.testing.assert_close(got_naive, ref, atol=1e-4, rtol=0)


def test_converted_greedy_generation_matches_transformers():
    hf = tiny_gpt2()
    ours = from_hf_gpt2(hf)
    idx = torch.randint(0, 97, (1, 5), generator=torch.Generator().manual_seed(2))
    ref = hf.generate(idx, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(ours, idx, 8, temperature=0), ref)


def test_unsupported_configs_are_clear_errors():
    with pytest.raises(ValueError, match="activation_function"):
        config_from_hf(transformers.GPT2Config(activation_function="relu"))
    with pytest.raises(ValueError, match="n_inner"):
        config_from_hf(transformers.GPT2Config(n_inner=100))
