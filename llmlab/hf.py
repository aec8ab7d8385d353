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
:func:`gpt2_sft_demo` fine-tunes a converted GPT-2 with notebook 04's SFT (online only).
"""
from __future__ import annotations

import time
from typing import Callable

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


# --------------------------------------------------------------------------------------------
# The same SFT on real GPT-2 (notebook 04, section 9; online only)
# --------------------------------------------------------------------------------------------


class TiktokenChat:
    """GPT-2's tiktoken encoding with the few members :func:`llmlab.chat.tokenize_chat` and
    :func:`llmlab.evaluate.generate_replies` use (its only special token is ``<|endoftext|>``)."""

    def __init__(self, enc):
        self.enc = enc
        self.eot_id = enc.eot_token
        self.pad_id = enc.eot_token
        self.special_tokens = {"<|endoftext|>": enc.eot_token}
        self.inverse_special = {enc.eot_token: "<|endoftext|>"}

    def encode(self, text: str, allowed_special="none") -> list[int]:
        return self.enc.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.enc.decode(list(ids))


def gpt2_sft_demo(load_model: Callable, train: list[dict], items: list[dict], steps: int = 300,
                  lr: float = 3e-5, batch_size: int = 16, device=None) -> dict:
    """Fine-tune real GPT-2 with SFT's data, template, masking and loop (notebook 04, section 9).

    ``load_model(device)`` returns GPT-2 as a :class:`~llmlab.model.GPT` (notebook 02's
    converter, ``llmlab.hf``). Needs the network for the weights and tiktoken's GPT-2 files;
    raises ``RuntimeError`` with the reason when they cannot be had. Returns the held-out
    metrics before and after, the fine-tuning time and the peak GPU memory.
    """
    from .config import TrainConfig
    from .device import pick_device
    from .evaluate import evaluate_chat, metrics_row
    from .sft import encode_examples, sft_train
    from .tokenizer import gpt2_encoding
    from .train import fine_tune_config

    enc, reason = gpt2_encoding()
    if enc is None:
        raise RuntimeError(f"GPT-2 demo needs the network: {reason}")
    tok = TiktokenChat(enc)
    device = pick_device(device) if not hasattr(device, "type") else device
    model = load_model(device)
    block = min(model.config.block_size, 256)
    train_enc, _ = encode_examples(train, tok, "alpaca", block)
    val_enc, _ = encode_examples(train[-64:], tok, "alpaca", block)
    before = metrics_row(evaluate_chat(model, tok, items, "alpaca"))
    cfg = fine_tune_config(TrainConfig(), lr=lr, max_steps=steps, batch_size=batch_size,
                           warmup_steps=max(steps // 20, 1), eval_every=max(steps // 3, 1),
                           eval_batches=4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    sft_train(model, train_enc, val_enc, cfg, tok.pad_id, device=device)
    seconds = time.perf_counter() - t0
    after = metrics_row(evaluate_chat(model, tok, items, "alpaca"))
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"before": before, "after": after, "sft_seconds": round(seconds, 1),
            "peak_gpu_gib": None if mem is None else round(mem, 2), "steps": steps}
