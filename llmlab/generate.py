"""Generating text from a language model (notebook 02, "Generation").

Version 1, :func:`generate_greedy`: feed the whole context, take the most likely next token,
append, repeat. Version 2, :func:`generate`, changes three things:

1. it *samples* from the next-token distribution reshaped by a temperature and truncated by
   top-k and/or top-p (nucleus, Holtzman et al. 2020) -- :func:`filter_logits`, :func:`sample_next`;
2. it keeps a **KV cache**: keys and values of past tokens are computed once, so each new
   token costs one position of work instead of the whole context (tested to give exactly the
   tokens generating without the cache gives);
3. it stops at the end-of-text token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def generate_greedy(model, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Version 1: append the argmax token ``max_new_tokens`` times. idx (B, T) -> (B, T + n)."""
    block = model.config.block_size
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block:])                     # (B, T, V)
        nxt = logits[:, -1, :].argmax(dim=-1, keepdim=True)    # (B, 1)
        idx = torch.cat([idx, nxt], dim=1)                     # (B, T + 1)
    return idx


def filter_logits(logits: torch.Tensor, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus. (B, V) -> (B, V).

    top-p keeps the smallest set of most likely tokens whose probabilities add up to at least
    ``top_p`` (the most likely token is always kept).

    >>> filter_logits(torch.tensor([[1.0, 3.0, 2.0]]), top_k=2).tolist()
    [[-inf, 3.0, 2.0]]
    """
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        k = min(top_k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]              # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
        probs = F.softmax(sorted_logits, dim=-1)                            # (B, V)
        before = probs.cumsum(dim=-1) - probs        # mass of the tokens ranked above each one
        drop_sorted = before >= top_p                                       # (B, V)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One next token per row from last-position ``logits`` (B, V) -> (B, 1).

    ``temperature == 0`` means greedy (argmax); otherwise logits are divided by the
    temperature (below 1 sharpens, above 1 flattens) before filtering and sampling.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = F.softmax(logits, dim=-1)                                   # (B, V)
    return torch.multinomial(probs, 1, generator=generator)            # (B, 1)


@torch.no_grad()
def generate(model, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, eot_id: int | None = None,
             use_cache: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Version 2: sample up to ``max_new_tokens`` tokens; idx (B, T) -> (B, T + n), n <= max.

    Unlike :func:`generate_greedy`: sampling per :func:`sample_next` (``temperature=0`` is
    greedy), a KV cache when ``use_cache`` (past keys and values are reused while the
    sequence fits in ``block_size``; beyond it the window slides and is recomputed, exactly
    as without the cache), and a stop once every row has produced ``eot_id`` (rows that
    finished early are padded with ``eot_id``).
    """
    was_training = model.training
    model.eval()
    block = model.config.block_size
    done = torch.zeros(idx.size(0), 1, dtype=torch.bool, device=idx.device)   # (B, 1)
    cache, fed = None, 0
    for _ in range(max_new_tokens):
        if use_cache and idx.size(1) <= block:
            if cache is None:                       # prefill: the whole prompt at once
                cache = model.new_cache()
                logits, _ = model(idx, cache=cache)                        # (B, T, V)
            else:                                   # one new token against the cache
                logits, _ = model(idx[:, fed:], cache=cache)               # (B, 1, V)
            fed = idx.size(1)
        else:                                       # no cache, or the window slides
            logits, _ = model(idx[:, -block:])                             # (B, T, V)
        nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
        if eot_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eot_id), nxt)
            done = done | (nxt == eot_id)
        idx = torch.cat([idx, nxt], dim=1)                                 # (B, T + 1)
        if eot_id is not None and bool(done.all()):
            break
    model.train(was_training)
    return idx
