"""A decoder-only transformer (GPT), built from its parts (notebook 02, "The model").

Reading order, as notebook 02 teaches it:

1. ``attention_naive`` -- causal self-attention written out: scores, an explicit mask,
   softmax, weighted sum (Vaswani et al. 2017, Eq. 1). It is the test oracle for
2. ``attention_sdpa`` -- the same through ``F.scaled_dot_product_attention`` (fused kernels).
3. ``rope_cos_sin`` / ``apply_rope`` -- rotary position embeddings (Su et al. 2021, Eq. 34),
   the modern alternative to the learned position table GPT-2 uses (``ModelConfig.positions``).
4. ``CausalSelfAttention``, ``MLP``, ``Block`` (pre-LayerNorm: ``x + attn(ln(x))``,
   ``x + mlp(ln(x))``), then ``GPT``: embeddings, blocks, final LayerNorm and a language-model
   head tied to the token embedding, initialised as GPT-2 was. ``GELU_FORMS`` holds three
   ways to compute the MLP's activation, which notebook 02 times.

``GPT.forward(idx, targets=None)`` returns ``(logits, loss)`` with logits of shape (B, T, V);
targets equal to ``-100`` are ignored by the loss (notebook 04 masks prompts that way).
A :class:`KVCache` passed to ``forward`` makes generation reuse past keys and values
(``llmlab.generate``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

IGNORE_INDEX = -100   # targets with this value do not count in the loss


# --------------------------------------------------------------------------------------------
# Attention, simple and fast
# --------------------------------------------------------------------------------------------


def causal_mask(T: int, S: int | None = None, device=None) -> torch.Tensor:
    """A (T, S) boolean mask, True where query t may attend key s (s <= t + S - T).

    With a cache, the T new queries sit at the end of S keys.

    >>> causal_mask(3).int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    S = T if S is None else S
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def attention_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention written out (Vaswani et al. 2017, Eq. 1): softmax(q k^T / sqrt(d) + M) v.

    q: (B, H, T, D); k, v: (B, H, S, D) with S >= T (the T queries are the last T positions).
    Returns (B, H, T, D). The test oracle for :func:`attention_sdpa`.
    """
    T, S, D = q.size(-2), k.size(-2), q.size(-1)
    # 1) scores: how much each query matches each key
    att = (q @ k.transpose(-2, -1)) / math.sqrt(D)               # (B, H, T, S)
    # 2) the mask: a position never sees the future
    mask = causal_mask(T, S, device=q.device)                    # (T, S)
    att = att.masked_fill(~mask, float("-inf"))                  # (B, H, T, S)
    # 3) softmax over keys: attention weights that sum to one
    att = F.softmax(att, dim=-1)                                 # (B, H, T, S)
    # 4) the weighted sum of values
    return att @ v                                               # (B, H, T, D)


def attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """The same causal attention through PyTorch's fused ``scaled_dot_product_attention``.

    Unlike :func:`attention_naive` it never materialises the (T, S) score matrix on kernels
    that support it (FlashAttention on GPU). Shapes as in ``attention_naive``.
    """
    T, S = q.size(-2), k.size(-2)
    if T == S:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    if T == 1:  # one new query attends every cached key: no mask needed
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    mask = causal_mask(T, S, device=q.device)                    # (T, S)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


# --------------------------------------------------------------------------------------------
# Rotary position embeddings (the modern alternative to a learned position table)
# --------------------------------------------------------------------------------------------


def rope_cos_sin(T: int, head_dim: int, base: float = 10000.0, offset: int = 0,
                 device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation angles of RoPE (Su et al. 2021, Eq. 34): theta_i = base^(-2i/D).

    Returns ``cos, sin`` of shape (T, D/2) for positions ``offset .. offset + T - 1``.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device).float() / head_dim)  # (D/2,)
    pos = torch.arange(offset, offset + T, device=device).float()                         # (T,)
    angles = torch.outer(pos, inv_freq)                                                   # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x1, x2) of channels by its position's angle.

    x: (B, H, T, D); cos, sin: (T, D/2). Returns (B, H, T, D). A rotation keeps the norm, and
    the dot product of two rotated vectors depends only on their distance in positions.
    """
    x1, x2 = x[..., 0::2], x[..., 1::2]                          # (B, H, T, D/2) each
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, H, T, D/2, 2)
    return out.flatten(-2).type_as(x)                            # (B, H, T, D)


# --------------------------------------------------------------------------------------------
# The blocks
# --------------------------------------------------------------------------------------------


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, one (k, v) pair per layer.

    ``pos`` is the number of cached positions (the position of the next token).
    """

    n_layer: int
    layers: list = field(default_factory=list)   # per layer: (k, v), each (B, H, S, D)
    pos: int = 0

    def __post_init__(self):
        if not self.layers:
            self.layers = [None] * self.n_layer


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (notebook 02, "Attention").

    ``use_sdpa=False`` runs :func:`attention_naive` with its explicit mask (the oracle).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"ModelConfig.n_embd={cfg.n_embd} must be divisible by n_head={cfg.n_head}")
        self.n_head, self.n_embd = cfg.n_head, cfg.n_embd
        self.head_dim = cfg.n_embd // cfg.n_head
        self.rope = cfg.positions == "rope"
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)   # q, k, v at once
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)       # back to the stream
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.use_sdpa = True

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                rope: tuple | None = None) -> torch.Tensor:
        B, T, C = x.shape                                                   # (B, T, C)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)                  # (B, T, C) each
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)        # (B, H, T, D)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)        # (B, H, T, D)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)        # (B, H, T, D)
        if self.rope:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            past = cache.layers[layer]
            if past is not None:
                k = torch.cat([past[0], k], dim=2)                          # (B, H, S, D)
                v = torch.cat([past[1], v], dim=2)                          # (B, H, S, D)
            cache.layers[layer] = (k, v)
        if self.use_sdpa:
            y = attention_sdpa(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        else:
            y = attention_naive(q, k, v)                                    # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)                    # (B, T, C)
        return self.resid_drop(self.c_proj(y))                              # (B, T, C)


def gelu_tanh_written_out(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (Hendrycks & Gimpel 2016, Sec. 2) written as its formula:
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, the form GPT-2's code used.

    Same function as ``F.gelu(x, approximate="tanh")`` to float rounding, but five element-wise
    passes over the tensor, each kept for the backward pass, instead of one fused kernel.
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


# Three ways to compute the MLP's activation (timed in notebook 02, "Where a step's time goes"):
GELU_FORMS = {
    "tanh, fused kernel (llmlab)": lambda x: F.gelu(x, approximate="tanh"),
    "exact (erf), fused kernel": F.gelu,
    "tanh, written out (GPT-2 code)": gelu_tanh_written_out,
}


class MLP(nn.Module):
    """Position-wise feed-forward: Linear(C, 4C), GELU (tanh form, as GPT-2), Linear(4C, C)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(self.gelu(self.c_fc(x))))             # (B, T, C)


class Block(nn.Module):
    """One pre-LayerNorm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None, layer=0, rope=None):
        x = x + self.attn(self.ln_1(x), cache, layer, rope)                 # (B, T, C)
        x = x + self.mlp(self.ln_2(x))                                      # (B, T, C)
        return x


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class GPT(nn.Module):
    """A GPT-2-style decoder-only language model (notebook 02, "The model").

    >>> from llmlab.config import ModelConfig
    >>> m = GPT(ModelConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16))
    >>> logits, loss = m(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long))
    >>> tuple(logits.shape), loss.ndim
    ((2, 8, 64), 0)
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.positions not in ("learned", "rope"):
            raise ValueError(f"ModelConfig.positions must be 'learned' or 'rope', got {cfg.positions!r}")
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)                # token embedding
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight                              # tied (Press & Wolf 2017)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) (two per block)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- size and cost ------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters; ``non_embedding=True`` leaves out the token and position tables.

        The non-embedding count is Kaplan et al.'s N (about 12 * n_layer * n_embd^2), the size
        the scaling laws of notebook 03 are written in. The tied head is counted once.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), as in PaLM's appendix B:

        ``6 * (N + V * C) + 12 * n_layer * T * C``: 6 FLOPs per weight (2 forward, 4 backward)
        for every matrix including the tied head (V x C), plus attention's scores and weighted
        sums over a context of T = ``seq_len`` (default ``block_size``).
        """
        cfg = self.config
        T = cfg.block_size if seq_len is None else seq_len
        n = self.num_params(non_embedding=True) + cfg.vocab_size * cfg.n_embd
        return 6.0 * n + 12.0 * cfg.n_layer * T * cfg.n_embd

    # -- forward ------------------------------------------------------------------------------
    def body(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """``idx`` (B, T) token ids -> final hidden states (B, T, C), after ``ln_f``.

        The language-model head reads these; so do the scalar heads of the reward model
        and of PPO's value model (:class:`ScalarModel`). With ``cache``, ``idx`` holds only the
        new tokens; positions continue at ``cache.pos``.
        """
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens is longer than the model's "
                             f"block_size={self.config.block_size}; crop the context first")
        x = self.wte(idx)                                                   # (B, T, C)
        rope = None
        if self.wpe is not None:
            pos = torch.arange(start, start + T, device=idx.device)         # (T,)
            x = x + self.wpe(pos)                                           # (B, T, C)
        else:
            rope = rope_cos_sin(T, self.config.n_embd // self.config.n_head, offset=start,
                                device=idx.device)
        x = self.drop(x)
        for i, block in enumerate(self.h):
            x = block(x, cache, i, rope)                                    # (B, T, C)
        if cache is not None:
            cache.pos += T
        return self.ln_f(x)                                                 # (B, T, C)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None):
        """``idx`` (B, T) token ids -> ``(logits (B, T, V), loss or None)``.

        ``targets`` (B, T): the next token at each position, ``IGNORE_INDEX`` where no loss is
        taken. With ``cache``, ``idx`` holds only the new tokens.
        """
        logits = self.lm_head(self.body(idx, cache))                        # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return logits, loss

    def set_attention(self, use_sdpa: bool) -> "GPT":
        """Switch every layer between the fused kernel and the explicit-mask version."""
        for block in self.h:
            block.attn.use_sdpa = use_sdpa
        return self

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer)


# =============================================================================================
# Models with a scalar head: the reward model (notebook 05) and PPO's value model (notebook 06)
# =============================================================================================


class ScalarModel(nn.Module):
    """A GPT body with its language-model head replaced by one number per position.

    ``kind="reward"``: the reward model reads the number at the reply's last token
    (InstructGPT, Ouyang et al. 2022, Sec. 3.5); ``kind="value"``: PPO's critic reads it at
    every position of the reply. The body keeps its (unused, tied) LM head so that a language
    model's weights load into it unchanged.

    >>> from llmlab.config import ModelConfig
    >>> m = ScalarModel(GPT(ModelConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16)))
    >>> tuple(m(torch.zeros(3, 5, dtype=torch.long)).shape)
    (3, 5)
    """

    KINDS = ("reward", "value")

    def __init__(self, body: GPT, kind: str = "reward"):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"ScalarModel kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        self.body = body
        self.config = body.config
        self.head = nn.Linear(body.config.n_embd, 1)
        nn.init.normal_(self.head.weight, mean=0.0, std=1.0 / math.sqrt(body.config.n_embd + 1))
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """``idx`` (B, T) -> one scalar per position (B, T)."""
        return self.head(self.body.body(idx)).squeeze(-1).float()          # (B, T)

    def num_params(self, non_embedding: bool = True) -> int:
        return self.body.num_params(non_embedding) + sum(p.numel() for p in self.head.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: the body's, less its unused head (V x C), plus the scalar head."""
        cfg = self.config
        return self.body.flops_per_token(seq_len) - 6.0 * cfg.vocab_size * cfg.n_embd + 6.0 * cfg.n_embd


def model_kind(model: nn.Module) -> str:
    """``"lm"`` for a :class:`GPT`, else the :class:`ScalarModel`'s kind."""
    return getattr(model, "kind", "lm")


def build_model(cfg: ModelConfig, kind: str = "lm") -> nn.Module:
    """A fresh model of ``kind`` (``lm``, ``reward`` or ``value``): what a checkpoint rebuilds."""
    if kind == "lm":
        return GPT(cfg)
    return ScalarModel(GPT(cfg), kind)


def gather_at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values`` (B, T) read at one position per row, ``index`` (B,) -> (B,).

    >>> gather_at(torch.tensor([[1., 2., 3.], [4., 5., 6.]]), torch.tensor([2, 0]))
    tensor([3., 4.])
    """
    return values.gather(1, index.long().view(-1, 1)).squeeze(1)              # (B,)


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Log-probability of each row's target tokens: ``sum_t log p(targets[b, t] | < t)``.

    ``logits`` (B, T, V) and ``targets`` (B, T) aligned as in the training loss (the target at
    position t is the token *after* t); positions whose target is ``IGNORE_INDEX`` count for
    nothing, so padding on either side and the prompt drop out. ``average=True`` divides by
    the number of counted tokens (per-token log-probability). Returns (B,).
    SFT's evaluation, the reward model's pairs, DPO's loss and PPO's ratios and KL all use it.

    >>> logits = torch.zeros(1, 3, 4)                       # uniform over 4 tokens
    >>> t = torch.tensor([[IGNORE_INDEX, 1, 2]])
    >>> round(sequence_logprobs(logits, t).item(), 4), round(sequence_logprobs(logits, t, True).item(), 4)
    (-2.7726, -1.3863)
    """
    mask = targets != IGNORE_INDEX                                           # (B, T)
    logp = torch.log_softmax(logits.float(), dim=-1)                          # (B, T, V)
    tok = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)    # (B, T)
    total = (tok * mask).sum(-1)                                              # (B,)
    if average:
        return total / mask.sum(-1).clamp(min=1)
    return total
