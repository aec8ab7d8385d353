"""Real GPT-2 weights in llmlab's model (notebook 02, "Real weights").

llmlab's :class:`~llmlab.model.GPT` has GPT-2's architecture, so OpenAI's released weights
load into it once two differences are handled:

1. GPT-2 stores its Linear layers as ``Conv1D`` with the weight as (in, out); ``nn.Linear``
   keeps (out, in), so those four matrices per block are transposed;
2. the names differ by a prefix (``transformer.h.0.attn.c_attn.weight`` -> ``h.0.attn.c_attn.weight``).

:func:`from_hf_gpt2` converts any ``transformers`` ``GPT2LMHeadModel``; :func:`load_gpt2`
downloads a released one (``gpt2``, ``gpt2-medium``...) -- only when a learner asks, online,
with the optional ``hf`` extra (``pip install "llmlab[hf]"``). The test converts a randomly
initialised ``GPT2LMHeadModel`` built from a config, offline, and compares logits.
"""
from __future__ import annotations

import torch

from .config import ModelConfig
from .model import GPT

TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def config_from_hf(hf_config) -> ModelConfig:
    """llmlab's ModelConfig for a ``transformers.GPT2Config`` (clear errors for what differs)."""
    act = getattr(hf_config, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"GPT2Config.activation_function={act!r}: llmlab's MLP uses the tanh "
                         f"GELU of GPT-2 ('gelu_new')")
    n_inner = getattr(hf_config, "n_inner", None)
    if n_inner not in (None, 4 * hf_config.n_embd):
        raise ValueError(f"GPT2Config.n_inner={n_inner}: llmlab's MLP is 4 * n_embd wide")
    eps = getattr(hf_config, "layer_norm_epsilon", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise ValueError(f"GPT2Config.layer_norm_epsilon={eps}: llmlab uses LayerNorm's 1e-5")
    return ModelConfig(vocab_size=hf_config.vocab_size, block_size=hf_config.n_positions,
                       n_layer=hf_config.n_layer, n_head=hf_config.n_head,
                       n_embd=hf_config.n_embd, dropout=0.0, bias=True, positions="learned")


@torch.no_grad()
def from_hf_gpt2(hf_model) -> GPT:
    """A :class:`GPT` holding the weights of a ``transformers`` ``GPT2LMHeadModel``."""
    cfg = config_from_hf(hf_model.config)
    model = GPT(cfg)
    src = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()
           if not k.endswith((".attn.bias", ".attn.masked_bias"))}   # causal-mask buffers
    dst = model.state_dict()
    missing = sorted(set(dst) - set(src))
    extra = sorted(set(src) - set(dst))
    if missing or extra:
        raise ValueError(f"GPT-2 state dict does not match llmlab's GPT: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for name, tensor in src.items():
        value = tensor.t() if name.endswith(TRANSPOSED) else tensor
        if value.shape != dst[name].shape:
            raise ValueError(f"{name}: GPT-2 has shape {tuple(value.shape)}, llmlab expects "
                             f"{tuple(dst[name].shape)}")
        dst[name].copy_(value)
    return model.eval()


def load_gpt2(name: str = "gpt2") -> GPT:
    """Download OpenAI's GPT-2 ``name`` with ``transformers`` and convert it (needs the network)."""
    try:
        from transformers import GPT2LMHeadModel
    except ImportError as exc:
        raise ImportError("loading GPT-2 needs the optional 'transformers' package: "
                          'pip install "llmlab[hf]"') from exc
    return from_hf_gpt2(GPT2LMHeadModel.from_pretrained(name))
