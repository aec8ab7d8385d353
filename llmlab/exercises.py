"""Checked exercises: the learner writes one function of a stage, the package checks it.

An exercise is a small function at the heart of a stage (a BPE merge, the causal mask, the
-100 targets, the Bradley-Terry loss, ...). In a notebook it is three cells: the instructions
(markdown), the learner's function (the cell tagged ``exercise-solution``; the committed
notebooks hold a worked solution there, the *instructor edition*) and a check cell tagged
``exercise-check``::

    from llmlab import exercises
    exercises.check("bpe_merge", my_merge);

:func:`check` runs the learner's function on fixed cases, then on seeded random ones, against
the **real package function** the notebook teaches (``llmlab.tokenizer.merge`` for
``bpe_merge``), and prints one verdict: which input failed, what was expected and what came
back, and a hint when the wrong answer is one of the exercise's *classic wrong answers*. An
exception in the learner's code is reported with the input that caused it, never as a bare
traceback; a stub that raises ``NotImplementedError`` is "not attempted yet", not a failure.

The student edition of the notebooks replaces every solution cell by such a stub
(:func:`student_edition`; ``python -m llmlab.exercises student --out student/``).

Every exercise's reference is the function its notebook runs, for example
``llmlab.generate.filter_logits`` for top-k and nucleus filtering (notebook 02),
``llmlab.scaling.ScalingLaw.optimal``
for the compute-optimal size (notebook 03), ``llmlab.ppo.penalised_rewards`` and ``llmlab.ppo.gae``
for the KL-penalised rewards and GAE (notebook 06), ``llmlab.dpo.dpo_loss`` for the DPO loss (07), ``llmlab.beyond.group_advantages``
for GRPO's group advantages (08).
"""
from __future__ import annotations

import argparse
import ast
import copy
import math
import random
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import chat, dpo, generate, model, ppo, reward, scaling, sft, tokenizer
from .beyond import group_advantages
from .data import dedup

REPO = Path(__file__).resolve().parent.parent
SOLUTION_TAG = "exercise-solution"
CHECK_TAG = "exercise-check"
TIME_LIMIT_S = 5.0      # per call of the learner's function (an endless loop is a verdict too)


# --------------------------------------------------------------------------------------------
# 1. Exercises and their classic wrong answers
# --------------------------------------------------------------------------------------------


@dataclass
class Wrong:
    """A classic wrong answer: a function that makes the mistake, and the hint it earns."""

    label: str                     # short name of the mistake, e.g. "loss on prompt tokens"
    fn: Callable                   # the mistake, written out (same signature as the reference)
    hint: str                      # what the learner reads when their output matches fn's


@dataclass
class Exercise:
    """One checked exercise (see the module docstring)."""

    name: str                      # the key check() takes, e.g. "bpe_merge"
    notebook: str                  # the notebook's number, e.g. "01"
    title: str                     # one line, e.g. "one BPE merge step"
    instructions: str              # markdown: what to write, with a tiny worked example
    reference: Callable            # the package's real function (the oracle)
    fixed: list                    # argument tuples, checked first, in order
    random_case: Callable          # random.Random -> argument tuple
    wrongs: list = field(default_factory=list)      # list[Wrong]
    n_random: int = 25             # random cases after the fixed ones
    error_hints: dict = field(default_factory=dict)  # exception class name -> hint
    arg_names: tuple = ()          # names shown beside the input values

    @property
    def reference_name(self) -> str:
        return f"{self.reference.__module__}.{self.reference.__qualname__}"


EXERCISES: dict[str, Exercise] = {}


def register(ex: Exercise) -> Exercise:
    EXERCISES[ex.name] = ex
    return ex


def _ids(rng: random.Random, n: int, alphabet: int) -> list[int]:
    return [rng.randrange(alphabet) for _ in range(n)]


def _randn(rng: random.Random, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(rng.randrange(2**31)))


# ---- 01: one BPE merge step -----------------------------------------------------------------


def _merge_no_skip(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out


def _merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return list(ids[:i]) + [new_id] + list(ids[i + 2:])
    return list(ids)


def _merge_right_to_left(ids, pair, new_id):
    return tokenizer.merge(list(ids)[::-1], tuple(pair)[::-1], new_id)[::-1]


register(Exercise(
    name="bpe_merge", notebook="01", title="one BPE merge step",
    instructions=(
        "Write `my_merge(ids, pair, new_id)`: return a new list in which every occurrence of the "
        "adjacent `pair` in `ids` is replaced by the single token `new_id`. Scan left to right; "
        "where occurrences overlap, the leftmost one wins.\n\n"
        "Example: `my_merge([1, 2, 3, 1, 2], (1, 2), 4) -> [4, 3, 4]` and "
        "`my_merge([7, 7, 7], (7, 7), 8) -> [8, 7]`."),
    reference=tokenizer.merge, arg_names=("ids", "pair", "new_id"),
    fixed=[([1, 2, 3, 1, 2], (1, 2), 4), ([5, 6, 1, 2], (1, 2), 9), ([1, 2, 3, 4, 1, 2], (1, 2), 9),
           ([7, 7, 7], (7, 7), 8), ([1, 2], (1, 2), 3), ([3, 1], (1, 2), 4), ([], (1, 2), 3)],
    random_case=lambda rng: (_ids(rng, rng.randrange(0, 30), 4), (rng.randrange(4), rng.randrange(4)), 4),
    wrongs=[
        Wrong("second token kept", _merge_no_skip,
              "after replacing a pair, skip both of its tokens (move on by two, not one): "
              "the second token of the pair is still in your output."),
        Wrong("last token dropped", _merge_drops_last,
              "the last token disappears when it is not part of the pair: a loop over "
              "positions 0..n-2 must still copy the final token."),
        Wrong("first occurrence only", _merge_first_only,
              "replace every occurrence of the pair, not only the first one."),
        Wrong("right to left", _merge_right_to_left,
              "scan from the left: in 7 7 7 the pair at positions 0-1 wins, giving [8, 7]."),
    ]))


# ---- 01: exact Jaccard similarity of shingle sets ---------------------------------------------


def _shingle_sets(rng: random.Random) -> tuple[set, set]:
    pool = [("w%d" % rng.randrange(8), "w%d" % rng.randrange(8)) for _ in range(12)]
    return set(rng.sample(pool, rng.randrange(0, 8))), set(rng.sample(pool, rng.randrange(0, 8)))


register(Exercise(
    name="jaccard", notebook="01", title="exact Jaccard similarity of two shingle sets",
    instructions=(
        "Write `my_jaccard(a, b)`: the Jaccard similarity |A ∩ B| / |A ∪ B| of two sets (of "
        "shingles). Two empty sets are identical: their similarity is 1.0.\n\n"
        "Example: `my_jaccard({1, 2, 3}, {2, 3, 4}) -> 0.5`."),
    reference=dedup.jaccard, arg_names=("a", "b"),
    fixed=[({1, 2, 3}, {2, 3, 4}), ({1, 2}, {1, 2, 3, 4}), ({1, 2, 3}, {4, 5, 6, 7, 8}),
           ({("a", "b")}, {("a", "b")}), (set(), {1}), (set(), set())],
    random_case=_shingle_sets,
    wrongs=[
        Wrong("divided by the smaller set",
              lambda a, b: len(a & b) / min(len(a), len(b)) if a and b else float(not a and not b),
              "divide by the size of the union, not of the smaller set (that is the overlap "
              "coefficient: a set inside a larger one would score 1.0)."),
        Wrong("divided by the sum of sizes", lambda a, b: len(a & b) / (len(a) + len(b)) if a or b else 1.0,
              "|A| + |B| counts the shared elements twice; divide by |A ∪ B| = |A| + |B| - |A ∩ B|."),
        Wrong("empty sets score 0", lambda a, b: len(a & b) / len(a | b) if a | b else 0.0,
              "two empty sets are identical documents: return 1.0 when both are empty."),
    ],
    error_hints={"ZeroDivisionError": "two empty sets have an empty union: return 1.0 for them "
                                      "before dividing."}))


# ---- 02: the causal mask ---------------------------------------------------------------------


def _mask_strict(T, S=None):
    S = T if S is None else S
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T - 1)


def _mask_upper(T, S=None):
    S = T if S is None else S
    return torch.ones(T, S, dtype=torch.bool).triu(diagonal=S - T)


def _mask_no_offset(T, S=None):
    S = T if S is None else S
    return torch.ones(T, S, dtype=torch.bool).tril()


register(Exercise(
    name="causal_mask", notebook="02", title="the causal mask",
    instructions=(
        "Write `my_causal_mask(T, S=None)`: a boolean tensor of shape (T, S), True where query "
        "t may attend to key s. `S` defaults to `T`. A position sees itself and every earlier "
        "position, never a later one. With a KV cache there are more keys than queries (S > T): "
        "the T queries are the *last* T of the S positions, so query t sits at position "
        "t + S - T.\n\n"
        "Example: `my_causal_mask(3).int().tolist() -> [[1, 0, 0], [1, 1, 0], [1, 1, 1]]` and "
        "`my_causal_mask(1, 3).int().tolist() -> [[1, 1, 1]]`."),
    reference=model.causal_mask, arg_names=("T", "S"),
    fixed=[(3,), (1,), (5,), (2, 4), (1, 3), (3, 5)],
    random_case=lambda rng: (lambda T: (T,) if rng.random() < 0.5 else (T, T + rng.randrange(0, 5)))(
        rng.randrange(1, 9)),
    wrongs=[
        Wrong("diagonal excluded", _mask_strict,
              "a position may attend to itself: keep the diagonal (s <= t, not s < t). Without "
              "it the first row is all False and its softmax is NaN."),
        Wrong("future instead of past", _mask_upper,
              "that mask lets each position see the future and hides the past: keep the lower "
              "triangle (tril), not the upper one."),
        Wrong("cache offset ignored", _mask_no_offset,
              "with S > T keys the queries are the last T positions: query t sees keys "
              "0..t + S - T (tril's diagonal argument is S - T)."),
    ]))


# ---- 02: attention written out ---------------------------------------------------------------


def _attn(q, k, v, scale, dim=-1, mask=True):
    T, S = q.size(-2), k.size(-2)
    att = (q @ k.transpose(-2, -1)) * scale
    if mask:
        att = att.masked_fill(~model.causal_mask(T, S), float("-inf"))
    return F.softmax(att, dim=dim) @ v


def _qkv(rng: random.Random) -> tuple:
    B, H, T, D = rng.randrange(1, 3), rng.randrange(1, 3), rng.randrange(2, 7), rng.choice([4, 8, 16])
    return tuple(_randn(rng, B, H, T, D) for _ in range(3))


register(Exercise(
    name="attention", notebook="02", title="causal attention, written out",
    instructions=(
        "Write `my_attention(q, k, v)` for q, k, v of shape (B, H, T, D): causal "
        "self-attention, softmax(q kᵀ / √D + M) v, where M is 0 where the causal mask allows "
        "and -inf where it does not. Return shape (B, H, T, D). Four steps: scores, mask, "
        "softmax over the keys, weighted sum of the values (`llmlab.model.causal_mask` is "
        "yours to use)."),
    reference=model.attention_naive, arg_names=("q", "k", "v"),
    fixed=[tuple(_randn(random.Random(s), 1, 1, 4, 8) for s in (0, 1, 2)),
           tuple(_randn(random.Random(s), 2, 3, 5, 16) for s in (3, 4, 5))],
    random_case=_qkv,
    wrongs=[
        Wrong("not scaled", lambda q, k, v: _attn(q, k, v, 1.0),
              "divide the scores by √D before the softmax (without it the softmax saturates as "
              "D grows)."),
        Wrong("scaled by D", lambda q, k, v: _attn(q, k, v, 1.0 / q.size(-1)),
              "the scale is 1/√D, not 1/D."),
        Wrong("softmax over queries", lambda q, k, v: _attn(q, k, v, 1 / math.sqrt(q.size(-1)), dim=-2),
              "take the softmax over the keys (the last dimension, dim=-1): each query's "
              "weights must sum to one."),
        Wrong("no mask", lambda q, k, v: _attn(q, k, v, 1 / math.sqrt(q.size(-1)), mask=False),
              "mask the future: set the scores of keys after each query to -inf before the "
              "softmax."),
    ]))


# ---- 02: top-k and nucleus filtering -------------------------------------------------------


def _filter_variant(logits, top_k=None, top_p=None, *, exact_k=False, p_includes_self=False,
                    p_before_k=False, fill=float("-inf"), p_unsorted=False):
    """``generate.filter_logits`` written another way (defaults: the same result), and the
    classic mistakes, one keyword each."""
    def keep_top_k(x):
        k = min(top_k, x.size(-1))
        if exact_k:                             # exactly k survivors, ties broken by position
            idx = torch.topk(x, k, dim=-1).indices
            keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, idx, True)
        else:
            keep = x >= torch.topk(x, k, dim=-1).values[:, -1:]
        return keep

    def keep_nucleus(x):
        if p_unsorted:
            probs = torch.softmax(x, -1)
            mass_before = probs.cumsum(-1) - (0 if p_includes_self else probs)
            return mass_before < top_p
        order = torch.argsort(x, dim=-1, descending=True, stable=True)
        probs = torch.softmax(x.gather(-1, order), -1)
        mass_before = probs.cumsum(-1) - (0 if p_includes_self else probs)
        return torch.zeros_like(x, dtype=torch.bool).scatter(-1, order, mass_before < top_p)

    out = logits.clone()
    if p_before_k:
        if top_p is not None:
            out = out.masked_fill(~keep_nucleus(logits), fill)
        if top_k is not None:
            out = out.masked_fill(~keep_top_k(logits), fill)
        return out
    if top_k is not None:
        out = out.masked_fill(~keep_top_k(out), fill)
    if top_p is not None:
        out = out.masked_fill(~keep_nucleus(out), fill)
    return out


def _filter_case(rng: random.Random) -> tuple:
    B, V = rng.randrange(1, 4), rng.randrange(3, 11)
    top_k, top_p = rng.choice([None, 1, 2, 3, V + 2]), rng.choice([None, 0.5, 0.8, 0.9, 1.0])
    logits = _randn(rng, B, V) * 2                              # (B, V)
    if top_p is None:           # ties, which top-k must keep; under top-p two tied tokens at the
        logits = logits.round(decimals=1)   # threshold may be ranked either way, so none there
    return logits, top_k, top_p


register(Exercise(
    name="filter_logits", notebook="02", title="top-k and nucleus (top-p) filtering",
    instructions=(
        "Write `my_filter_logits(logits, top_k, top_p)`: `logits` (B, V) are next-token logits; "
        "`top_k` is None or an int >= 1, `top_p` None or a float in (0, 1]. Return (B, V): the "
        "logits with every token the filters drop set to -inf (so that softmax gives it "
        "probability 0). First top-k: keep the tokens whose logit is at least the k-th largest "
        "of its row (ties at that value all stay; k larger than V keeps everything). Then top-p "
        "on what is left: rank the remaining tokens by probability (softmax of the row), and "
        "keep a token while the probability mass ranked *above* it is still below `top_p`, so "
        "the token whose probability carries the mass to `top_p` stays too (the most likely "
        "token always stays). None skips a filter.\n\n"
        "Example: `my_filter_logits(torch.tensor([[1.0, 3.0, 2.0]]), 2, None)` -> "
        "`tensor([[-inf, 3.0, 2.0]])`; with `(None, 0.5)` only the 3.0 stays (its probability "
        "is already 0.67)."),
    reference=generate.filter_logits, arg_names=("logits", "top_k", "top_p"),
    fixed=[(torch.tensor([[1.0, 3.0, 2.0]]), 2, None),
           (torch.tensor([[1.0, 3.0, 2.0]]), None, 0.5),
           (torch.tensor([[0.0, 2.0, 2.0, 3.0, -1.0]]), 2, None),
           (torch.tensor([[2.0, 0.5, 1.0, 1.5]]), None, 0.9),
           (torch.tensor([[0.0, 4.0, 3.5, -2.0, 3.0], [1.0, 0.0, 0.5, 0.2, -1.0]]), 3, 0.6),
           (torch.tensor([[2.0, 1.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]), 2, 0.5)],
    random_case=_filter_case,
    wrongs=[
        Wrong("top-k keeps exactly k", lambda x, k, p: _filter_variant(x, k, p, exact_k=True),
              "keep every token whose logit is at least the k-th largest: tokens tied with the "
              "k-th all stay (compare with `torch.topk(...).values[:, -1:]`), as nanoGPT and "
              "Hugging Face do."),
        Wrong("nucleus drops the token that crosses top_p",
              lambda x, k, p: _filter_variant(x, k, p, p_includes_self=True),
              "a token stays while the mass ranked *above* it is below top_p: subtract its own "
              "probability from the cumulative sum, or the token that carries the mass to top_p "
              "(sometimes the most likely one) is dropped."),
        Wrong("nucleus in vocabulary order", lambda x, k, p: _filter_variant(x, k, p, p_unsorted=True),
              "rank the tokens by probability before summing (`torch.sort(..., descending=True)`), "
              "then map the decision back to the vocabulary order."),
        Wrong("top-p on the unfiltered logits", lambda x, k, p: _filter_variant(x, k, p, p_before_k=True),
              "apply top-p to what top-k left: its probabilities are the softmax of the row after "
              "top-k, so the mass is shared among fewer tokens."),
        Wrong("dropped tokens set to 0", lambda x, k, p: _filter_variant(x, k, p, fill=0.0),
              "set dropped logits to -inf, not 0: softmax still gives a logit of 0 the weight "
              "e^0 = 1."),
    ]))


# ---- 03: the compute-optimal model size ------------------------------------------------------


def _optimal_variant(law, C, *, c6=True, swap=False, invert_g=False, d_from_c_over_n=False):
    a, b = law.beta / (law.alpha + law.beta), law.alpha / (law.alpha + law.beta)
    if swap:
        a, b = b, a
    G = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    if invert_g:
        G = 1 / G
    x = C / 6 if c6 else C
    N = G * x ** a
    return N, (C / N if d_from_c_over_n else x ** b / G)


def _twenty_tokens(law, C):
    N = math.sqrt(C / 120)                       # C = 6 N D with D = 20 N
    return N, 20 * N


def _law_case(rng: random.Random) -> tuple:
    law = scaling.ScalingLaw(E=round(rng.uniform(1.0, 2.0), 3), A=round(rng.uniform(50, 2000), 1),
                             B=round(rng.uniform(50, 3000), 1), alpha=round(rng.uniform(0.2, 0.6), 3),
                             beta=round(rng.uniform(0.2, 0.6), 3))
    return law, 10 ** rng.uniform(15, 27)


register(Exercise(
    name="compute_optimal", notebook="03", title="the compute-optimal model size",
    instructions=(
        "Write `my_optimal(law, C)`: `law` is a `scaling.ScalingLaw` (its attributes `E`, `A`, "
        "`B`, `alpha`, `beta` are the constants of L(N, D) = E + A/N^α + B/D^β) and `C` a "
        "compute budget in FLOPs. Return `(N_opt, D_opt)`, the parameters and tokens that "
        "minimise L under C = 6ND: N_opt = G·(C/6)^a and D_opt = G⁻¹·(C/6)^b, with "
        "G = (αA/(βB))^(1/(α+β)), a = β/(α+β) and b = α/(α+β).\n\n"
        "Example: Epoch AI's fit (`scaling.EPOCH`) at C = 1e21 FLOPs gives N_opt ≈ 2.78e9 "
        "parameters and D_opt ≈ 6.00e10 tokens (N_opt · D_opt · 6 = C)."),
    reference=scaling.ScalingLaw.optimal, arg_names=("law", "C"),
    fixed=[(scaling.EPOCH, 1e21), (scaling.CHINCHILLA, scaling.flops_6nd(70e9, 1.4e12)),
           (scaling.ScalingLaw(E=1.5, A=300.0, B=900.0, alpha=0.3, beta=0.45), 1e18)],
    random_case=_law_case,
    wrongs=[
        Wrong("C instead of C/6", lambda law, C: _optimal_variant(law, C, c6=False),
              "the constraint is C = 6ND, so the closed form raises C/6, not C, to the powers a "
              "and b."),
        Wrong("exponents swapped", lambda law, C: _optimal_variant(law, C, swap=True),
              "N_opt grows as (C/6)^a with a = β/(α+β) (β, the *data* exponent, on top), and "
              "D_opt as (C/6)^b with b = α/(α+β)."),
        Wrong("G inverted", lambda law, C: _optimal_variant(law, C, invert_g=True),
              "N_opt = G·(C/6)^a and D_opt = G⁻¹·(C/6)^b, with G = (αA/(βB))^(1/(α+β)): the "
              "larger the model term's A, the larger the model."),
        Wrong("D from C / N", lambda law, C: _optimal_variant(law, C, d_from_c_over_n=True),
              "C = 6ND, so D = C / (6N): the 6 counts the FLOPs per parameter and token."),
        Wrong("twenty tokens per parameter", _twenty_tokens,
              "20 tokens per parameter is a rounded rule of thumb, not this law's optimum: the "
              "law's ratio D_opt/N_opt = G⁻²·(C/6)^(b-a) depends on its constants and on C."),
    ]))


# ---- 04: reply-only targets ------------------------------------------------------------------


def _chat_case(rng: random.Random) -> tuple[list, list]:
    n_prompt, n_reply, n_tail = rng.randrange(1, 6), rng.randrange(1, 6), rng.randrange(0, 3)
    mask = [0] * n_prompt + [1] * n_reply + [0] * n_tail
    if rng.random() < 0.3:                               # a second turn
        mask += [0] * rng.randrange(1, 4) + [1] * rng.randrange(1, 4)
    return [rng.randrange(10, 60) for _ in mask], mask


register(Exercise(
    name="make_targets", notebook="04", title="targets that train on the reply only",
    instructions=(
        "Write `my_make_targets(ids, mask)`: `ids` is a tokenised conversation and `mask[i]` is "
        "1 where token i belongs to an assistant reply, else 0. Return `(x, y)`, two lists of "
        "length `len(ids) - 1`: the inputs `x = ids[:-1]` and the next-token targets, "
        "`y[t] = ids[t + 1]` when token t + 1 is a reply token and -100 (`IGNORE_INDEX`) "
        "otherwise.\n\n"
        "Example: `my_make_targets([5, 6, 7, 8], [0, 0, 1, 1]) -> ([5, 6, 7], [-100, 7, 8])`."),
    reference=chat.make_targets, arg_names=("ids", "mask"),
    fixed=[([5, 6, 7, 8], [0, 0, 1, 1]), ([11, 12, 13, 14, 15, 16], [0, 0, 1, 1, 1, 0]),
           ([1, 2, 3, 4, 5, 6, 7], [0, 1, 1, 0, 0, 1, 1])],
    random_case=_chat_case,
    wrongs=[
        Wrong("loss on prompt tokens", lambda ids, mask: (list(ids[:-1]), list(ids[1:])),
              "no target is -100, so the loss also trains the model to write the user's turn and "
              "the template: set the target to -100 wherever the next token is not a reply token."),
        Wrong("mask not shifted",
              lambda ids, mask: (list(ids[:-1]), [t if m else -100 for t, m in zip(ids[1:], mask[:-1])]),
              "off by one: the target at position t is token t + 1, so read its mask at t + 1 "
              "(mask[1:]), not at t."),
        Wrong("targets not shifted",
              lambda ids, mask: (list(ids[:-1]), [t if m else -100 for t, m in zip(ids[:-1], mask[:-1])]),
              "the target at position t is the *next* token, ids[t + 1], not ids[t] itself."),
        Wrong("reply masked instead",
              lambda ids, mask: (list(ids[:-1]), [-100 if m else t for t, m in zip(ids[1:], mask[1:])]),
              "the mask is inverted: keep the targets of reply tokens (mask 1) and put -100 on "
              "the prompt's (mask 0)."),
    ]))


# ---- 04: the masked loss ---------------------------------------------------------------------


def _nll_case(rng: random.Random) -> tuple:
    B, T, V = rng.randrange(1, 4), rng.randrange(2, 7), rng.randrange(2, 6)
    logits = _randn(rng, B, T, V) * 2
    targets = torch.tensor([[rng.randrange(V) for _ in range(T)] for _ in range(B)])
    keep = torch.tensor([[rng.random() < 0.6 for _ in range(T)] for _ in range(B)])
    keep[0, -1] = True                                          # at least one counted target
    return logits, targets.masked_fill(~keep, model.IGNORE_INDEX)


def _nll_all_positions(logits, targets):
    logp = logits.float().log_softmax(-1)
    tok = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (tok * (targets != model.IGNORE_INDEX)).sum() / targets.numel()


def _nll_per_sequence(logits, targets):
    logp = logits.float().log_softmax(-1)
    keep = targets != model.IGNORE_INDEX
    tok = -logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    return (tok.sum(-1) / keep.sum(-1).clamp(min=1)).mean()


register(Exercise(
    name="masked_nll", notebook="04", title="the loss over reply tokens",
    instructions=(
        "Write `my_masked_nll(logits, targets)` for logits (B, T, V) and targets (B, T): the "
        "mean of -log p(target) over the positions whose target is not -100, as a 0-dimensional "
        "tensor. Every counted token of the batch weighs the same.\n\n"
        "Example: logits all zero over V = 2 tokens give -log(1/2) = 0.6931 whatever the "
        "targets."),
    reference=sft.masked_nll, arg_names=("logits", "targets"),
    fixed=[(torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]]), torch.tensor([[-100, 0, 1]])),
           (torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[0.0, 0.0, 3.0], [0.5, 0.5, 0.0]]]),
            torch.tensor([[0, -100], [2, 1]])),
           (torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[0.0, 3.0], [1.0, 0.0], [0.0, 0.0]]]),
            torch.tensor([[0, 1, 0], [1, -100, -100]]))],
    random_case=_nll_case,
    wrongs=[
        Wrong("mean over all positions", _nll_all_positions,
              "divide by the number of counted targets, not by B × T: the -100 positions must "
              "not dilute the mean."),
        Wrong("mean per conversation", _nll_per_sequence,
              "average over tokens, not conversations: take one mean over every counted token of "
              "the batch, so a long reply weighs more than a short one."),
        Wrong("sum instead of mean",
              lambda lg, tg: F.cross_entropy(lg.flatten(0, 1).float(), tg.flatten(), reduction="sum"),
              "that is the sum of the losses; divide by the number of counted targets."),
    ]))


# ---- 05: the Bradley-Terry loss --------------------------------------------------------------


def _rewards(rng: random.Random) -> tuple:
    B = rng.randrange(1, 9)
    return _randn(rng, B) * 3, _randn(rng, B) * 3


register(Exercise(
    name="bt_loss", notebook="05", title="the Bradley-Terry loss",
    instructions=(
        "Write `my_bt_loss(r_chosen, r_rejected)` for two tensors of shape (B,): the rewards of "
        "the chosen and of the rejected reply of B pairs. Return the mean over the batch of "
        "-log σ(r_chosen - r_rejected), a 0-dimensional tensor (`torch.nn.functional.logsigmoid` "
        "computes log σ without overflow).\n\n"
        "Example: `my_bt_loss(torch.tensor([1.0]), torch.tensor([0.0]))` -> log(1 + e⁻¹) = 0.3133."),
    reference=reward.bt_loss, arg_names=("r_chosen", "r_rejected"),
    fixed=[(torch.tensor([1.0]), torch.tensor([0.0])), (torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])),
           (torch.tensor([3.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.5]))],
    random_case=_rewards,
    wrongs=[
        Wrong("sign flipped", lambda w, l: -F.logsigmoid(l - w).mean(),
              "the margin is r_chosen - r_rejected: your loss rewards preferring the rejected "
              "reply (it falls as the rejected reward rises)."),
        Wrong("no mean", lambda w, l: -F.logsigmoid(w - l),
              "return one number: the mean over the batch (your result has one loss per pair)."),
        Wrong("sigmoid instead of logsigmoid", lambda w, l: -torch.sigmoid(w - l).mean(),
              "the loss is the negative *log* of the sigmoid (the log-likelihood of the "
              "annotator's pick): use F.logsigmoid, not torch.sigmoid."),
        Wrong("minus sign missing", lambda w, l: F.logsigmoid(w - l).mean(),
              "the loss is the *negative* log-likelihood: put a minus sign in front, so that it "
              "falls as the chosen reward rises above the rejected one."),
    ]))


# ---- 05: the reward at the reply's last token ------------------------------------------------


def _values_case(rng: random.Random) -> tuple:
    B, T = rng.randrange(2, 6), rng.randrange(3, 9)
    return _randn(rng, B, T), torch.tensor([rng.randrange(T - 1) for _ in range(B)])


register(Exercise(
    name="reward_at_last", notebook="05", title="the reward at each reply's last token",
    instructions=(
        "Write `my_reward_at(values, last)`: `values` (B, T) is the scalar head's output at every "
        "position of B right-padded sequences and `last` (B,) the position of each row's last "
        "real token (the reply's `<|im_end|>`). Return the (B,) tensor of `values[b, last[b]]`, "
        "one reward per row (`Tensor.gather` or indexing with two index tensors).\n\n"
        "Example: values [[1, 2, 3], [4, 5, 6]] with last [2, 0] -> [3, 4]."),
    reference=model.gather_at, arg_names=("values", "last"),
    fixed=[(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), torch.tensor([2, 0])),
           (torch.tensor([[0.5, -1.0, 9.0, 9.0], [2.0, 3.0, 4.0, 9.0], [7.0, 9.0, 9.0, 9.0]]),
            torch.tensor([1, 2, 0]))],
    random_case=_values_case,
    wrongs=[
        Wrong("last column", lambda v, last: v[:, -1],
              "the last column is padding for every row shorter than the batch: read each row "
              "at its own `last[b]`."),
        Wrong("every row at every index", lambda v, last: v[:, last],
              "`values[:, last]` reads every row at every index (shape (B, B)); pair row b with "
              "last[b] only: `values[torch.arange(B), last]`."),
        Wrong("gather not squeezed", lambda v, last: v.gather(1, last.view(-1, 1)),
              "`gather` keeps the gathered dimension, (B, 1): squeeze it to (B,)."),
    ]))


# ---- 06: the per-token rewards of the KL-penalised objective --------------------------------


def _rewards_variant(scores, kl, mask, beta, *, score_at="last", penalty_masked=True, sign=-1.0):
    """``ppo.penalised_rewards`` written another way (defaults: the same numbers), and the
    classic mistakes, one keyword each."""
    B, T = mask.shape
    rewards = sign * beta * kl * (mask if penalty_masked else torch.ones_like(mask))   # (B, T)
    pos = torch.arange(T).expand(B, T)
    if score_at == "every":
        return rewards + scores.view(-1, 1) * mask
    col = {"last": torch.where(mask > 0, pos, -1).max(1).values,
           "first": torch.where(mask > 0, pos, T).min(1).values,
           "last column": torch.full((B,), T - 1)}[score_at]                  # (B,)
    rewards[torch.arange(B), col] += scores
    return rewards


def _reply_mask(rng: random.Random) -> torch.Tensor:
    """A (B, T) mask shaped like a rollout's: per row the prompt (0s), one run of reply tokens
    (1s), then padding (0s)."""
    B, T = rng.randrange(1, 5), rng.randrange(2, 9)
    mask = torch.zeros(B, T)
    for b in range(B):
        s = rng.randrange(T)
        mask[b, s:rng.randrange(s + 1, T + 1)] = 1.0
    return mask


def _rewards_case(rng: random.Random) -> tuple:
    mask = _reply_mask(rng)
    B, T = mask.shape
    return _randn(rng, B) * 2, _randn(rng, B, T), mask, rng.choice([0.05, 0.1, 0.2, 0.5])


register(Exercise(
    name="kl_rewards", notebook="06", title="the per-token rewards of the KL-penalised objective",
    instructions=(
        "Write `my_rewards(scores, kl, mask, beta)`: `scores` (B,) holds the reward model's score "
        "of each of B replies, `kl` (B, T) the per-token log π - log π_ref, and `mask` (B, T) is 1 "
        "on each row's reply tokens (one run of ones: the prompt before it and the padding after "
        "it are 0). Return the per-token rewards (B, T): -β·kl_t on every reply token, plus the "
        "reply's score on its last token (the last 1 of its row of the mask), and 0 off the mask. "
        "Summed over a reply they are R(x, y) - β Σ_t kl_t.\n\n"
        "Example: `my_rewards(torch.tensor([2.0]), torch.tensor([[0.0, 0.5, 1.0, 0.0]]), "
        "torch.tensor([[0.0, 1.0, 1.0, 0.0]]), 0.1)` -> `tensor([[0.0, -0.05, 1.9, 0.0]])`."),
    reference=ppo.penalised_rewards, arg_names=("scores", "kl", "mask", "beta"),
    fixed=[(torch.tensor([2.0]), torch.tensor([[0.0, 0.5, 1.0, 0.0]]), torch.tensor([[0.0, 1.0, 1.0, 0.0]]), 0.1),
           (torch.tensor([1.0, -0.5]), torch.tensor([[0.2, 0.1, 0.3, 0.4], [0.5, 0.2, 0.1, 0.7]]),
            torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]), 0.2)],
    random_case=_rewards_case,
    wrongs=[
        Wrong("score on every reply token", lambda s, k, m, b: _rewards_variant(s, k, m, b, score_at="every"),
              "the reward model scores the whole reply once: add its score to the reply's last "
              "token only (summed over the reply, the score must count once)."),
        Wrong("score on the first reply token", lambda s, k, m, b: _rewards_variant(s, k, m, b, score_at="first"),
              "the score belongs to the reply's *last* token, where the reply is finished and the "
              "reward model read it."),
        Wrong("score in the last column", lambda s, k, m, b: _rewards_variant(s, k, m, b, score_at="last column"),
              "a reply shorter than the batch ends before the last column (padding follows): put "
              "the score at the last 1 of its row of the mask."),
        Wrong("penalty off the reply", lambda s, k, m, b: _rewards_variant(s, k, m, b, penalty_masked=False),
              "multiply the penalty by the mask: prompt and padding tokens are not the policy's "
              "actions and get no reward."),
        Wrong("penalty sign flipped", lambda s, k, m, b: _rewards_variant(s, k, m, b, sign=1.0),
              "the KL is a *penalty*: r_t = -β·kl_t, so moving away from the reference costs "
              "reward."),
    ]))


# ---- 06: generalised advantage estimation ----------------------------------------------------


def _gae_variant(rewards, values, mask, gamma, lam, *, lam_used=True, forward=False,
                 padding_in_episode=False, returns_add_values=True, mask_returns=True):
    """``ppo.gae`` written another way (all flags at their defaults: the same numbers), and
    the classic mistakes, one flag each."""
    m = (mask.cumsum(1) > 0).to(mask.dtype) if padding_in_episode else mask   # (B, T)
    B, T = rewards.shape
    nxt = torch.cat([values[:, 1:] * m[:, 1:], values.new_zeros(B, 1)], 1)   # V_{t+1}, 0 after the episode
    delta = (rewards + gamma * nxt - values) * m                               # (B, T) TD errors
    decay = gamma * (lam if lam_used else 1.0)
    adv, running = torch.zeros_like(rewards), rewards.new_zeros(B)
    for t in (range(T) if forward else reversed(range(T))):
        running = (delta[:, t] + decay * running) * m[:, t]
        adv[:, t] = running
    adv = adv * mask
    ret = adv + values if returns_add_values else adv.clone()
    return adv, ret * mask if mask_returns else ret


def _gae_case(rng: random.Random) -> tuple:
    mask = _reply_mask(rng)
    B, T = mask.shape
    return (_randn(rng, B, T), _randn(rng, B, T), mask, rng.choice([0.9, 0.99, 1.0]),
            rng.choice([0.5, 0.8, 0.95]))


register(Exercise(
    name="gae", notebook="06", title="generalised advantage estimation",
    instructions=(
        "Write `my_gae(rewards, values, mask, gamma, lam)`: `rewards` and `values` (B, T) are the "
        "per-token rewards and the value model's predictions of B episodes, and `mask` (B, T) is "
        "1 on each row's reply tokens (one run of ones: the prompt before it and the padding "
        "after it are 0). Return `(advantages, returns)`, each (B, T), computed backwards from "
        "the end: δ_t = r_t + γ V_{t+1} - V_t and A_t = δ_t + γ λ A_{t+1}, where V_{t+1} and "
        "A_{t+1} are 0 after the reply's last token (the episode ends there: the padding's "
        "values are not the future); returns = A + V, the value model's targets. Both are 0 off "
        "the mask.\n\n"
        "Example: `my_gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), "
        "torch.ones(1, 2), 1.0, 1.0)` -> `(tensor([[0.5, 0.5]]), tensor([[1.0, 1.0]]))` "
        "(A_1 = 1 - 0.5; A_0 = 0 + 0.5 - 0.5 + A_1)."),
    reference=ppo.gae, arg_names=("rewards", "values", "mask", "gamma", "lam"),
    fixed=[(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 0.9, 0.8),
           (torch.tensor([[0.0, 0.1, -0.2, 1.0]]), torch.tensor([[0.0, 0.5, 0.4, 0.3]]),
            torch.tensor([[0.0, 1.0, 1.0, 1.0]]), 0.9, 0.8),
           (torch.tensor([[0.0, 0.5, 1.0, 0.0], [0.2, -0.1, 0.0, 0.0]]),
            torch.tensor([[0.1, 0.2, 0.3, 0.9], [0.4, 0.1, -0.5, 0.7]]),
            torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]), 0.99, 0.95)],
    random_case=_gae_case,
    wrongs=[
        Wrong("lambda missing", lambda r, v, m, g, lam: _gae_variant(r, v, m, g, lam, lam_used=False),
              "the advantages decay by γλ per step, not γ: multiply the running advantage by "
              "gamma * lam."),
        Wrong("forward recursion", lambda r, v, m, g, lam: _gae_variant(r, v, m, g, lam, forward=True),
              "an advantage sums the *future* TD errors: run the recursion backwards, from the "
              "last column down to the first."),
        Wrong("padding inside the episode", lambda r, v, m, g, lam: _gae_variant(r, v, m, g, lam,
                                                                                 padding_in_episode=True),
              "the episode ends at the reply's last token: V_{t+1} and A_{t+1} are 0 there, not "
              "the padding's values (carry nothing backwards from where the mask is 0)."),
        Wrong("returns without the values", lambda r, v, m, g, lam: _gae_variant(r, v, m, g, lam,
                                                                                 returns_add_values=False),
              "the value model's target is A + V (the λ-return), not the advantage alone."),
        Wrong("returns not masked", lambda r, v, m, g, lam: _gae_variant(r, v, m, g, lam, mask_returns=False),
              "multiply the returns by the mask too: off the reply there is nothing to predict."),
    ]))


# ---- 07: the DPO loss ------------------------------------------------------------------------


def _logps(rng: random.Random) -> tuple:
    B = rng.randrange(1, 7)
    return tuple(-_randn(rng, B).abs() * 10 for _ in range(4)) + (rng.choice([0.05, 0.1, 0.3, 0.5]),)


def _dpo_variant(pw, pl, rw, rl, beta):
    return -F.logsigmoid(beta * ((pw - rw) - (pl - rl)))                      # (B,) the loss written out


register(Exercise(
    name="dpo_loss", notebook="07", title="the DPO loss",
    instructions=(
        "Write `my_dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, "
        "ref_rejected_logps, beta)`: four (B,) tensors of sequence log-probabilities, of the "
        "policy and of the frozen reference model on the chosen and the rejected reply of B "
        "pairs. Return the loss of each pair, shape (B,): -log σ(β [(π_w - ref_w) - (π_l - "
        "ref_l)]) (`torch.nn.functional.logsigmoid` computes log σ without overflow; the "
        "training objective takes the mean).\n\n"
        "Example: all four equal give log 2 = 0.6931 for every pair, whatever β."),
    reference=dpo.dpo_loss,
    arg_names=("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps",
               "ref_rejected_logps", "beta"),
    fixed=[(torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5]), 0.1),
           (torch.tensor([-1.0, -6.0]), torch.tensor([-2.0, -3.0]), torch.tensor([-2.0, -5.0]),
            torch.tensor([-1.5, -4.0]), 0.5)],
    random_case=_logps,
    wrongs=[
        Wrong("beta missing", lambda pw, pl, rw, rl, beta: _dpo_variant(pw, pl, rw, rl, 1.0),
              "multiply the log-ratio margin by β before the log-sigmoid: β sets how far the "
              "policy may move from the reference."),
        Wrong("log-ratio sign flipped", lambda pw, pl, rw, rl, beta: _dpo_variant(pl, pw, rl, rw, beta),
              "the margin is chosen minus rejected: (π_w - ref_w) - (π_l - ref_l). Yours "
              "pushes the policy towards the rejected reply."),
        Wrong("reference forgotten", lambda pw, pl, rw, rl, beta: -F.logsigmoid(beta * (pw - pl)),
              "subtract the reference model's log-probabilities: DPO's reward is the *log-ratio* "
              "of policy to reference, not the policy's log-probability alone."),
        Wrong("mean taken", lambda pw, pl, rw, rl, beta: _dpo_variant(pw, pl, rw, rl, beta).mean(),
              "return one loss per pair, shape (B,): the objective (dpo.dpo_objective) takes the "
              "mean, and the per-pair losses are what a failure-mode analysis looks at."),
    ]))


# ---- 08: GRPO's group advantages ------------------------------------------------------------


def _groups(rng: random.Random) -> tuple:
    P, G = rng.randrange(1, 5), rng.randrange(2, 7)
    r = _randn(rng, P, G) * rng.choice([0.5, 1.0, 3.0]) + rng.choice([-2.0, 0.0, 1.0])
    return (r,)


def _adv_variant(rewards, *, per_group=True, unbiased=True, scale=True, centre=True):
    dims = dict(dim=1, keepdim=True) if per_group else {}
    x = rewards - rewards.mean(**dims) if centre else rewards
    if scale:
        x = x / (rewards.std(unbiased=unbiased, **dims) + 1e-6)
    return x


register(Exercise(
    name="group_advantages", notebook="08", title="GRPO's group-relative advantages",
    instructions=(
        "Write `my_group_advantages(rewards)`: `rewards` (P, G) holds the reward-model scores of "
        "G replies to each of P prompts (one group per row). Return (P, G): each reward minus "
        "its group's mean, divided by its group's standard deviation (unbiased, `torch.std`) "
        "plus 1e-6.\n\n"
        "Example: `[[1., 3., 5., 7.]]` -> `[[-1.1619, -0.3873, 0.3873, 1.1619]]` (mean 4, "
        "std sqrt(20/3))."),
    reference=group_advantages, arg_names=("rewards",),
    fixed=[(torch.tensor([[1.0, 3.0, 5.0, 7.0]]),),
           (torch.tensor([[0.0, 1.0], [2.0, 2.5], [-1.0, 3.0]]),)],
    random_case=_groups,
    wrongs=[
        Wrong("whole batch instead of per group", lambda r: _adv_variant(r, per_group=False),
              "normalise within each group (each row): the baseline of a reply is the other "
              "replies to the *same* prompt, not every reply of the batch."),
        Wrong("not divided by the std", lambda r: _adv_variant(r, scale=False),
              "divide by the group's standard deviation (plus 1e-6): GRPO standardises each group."),
        Wrong("population std", lambda r: _adv_variant(r, unbiased=False),
              "use the unbiased standard deviation (torch.std's default, n - 1 in the denominator)."),
        Wrong("mean not subtracted", lambda r: _adv_variant(r, centre=False),
              "subtract the group's mean first: the advantage says how much better than its "
              "siblings a reply did."),
    ]))


# --------------------------------------------------------------------------------------------
# 2. Comparing and showing values
# --------------------------------------------------------------------------------------------


def _canon(x: Any) -> Any:
    """Tuples become lists, numpy arrays tensors: the forms compared."""
    if isinstance(x, tuple):
        return [_canon(v) for v in x]
    if isinstance(x, list):
        return [_canon(v) for v in x]
    if type(x).__module__ == "numpy":
        return torch.as_tensor(x)
    return x


def difference(expected: Any, got: Any, where: str = "") -> str | None:
    """Why ``got`` is not ``expected`` (None when they agree), in one line.

    Tensors agree in shape and to float tolerance (booleans compare as 0/1); lists element by
    element; floats to 1e-6 relative.

    >>> difference([1, 2, 3], [1, 5, 3])
    'at [1]: expected 2, got 5'
    >>> difference(torch.zeros(2, 3), torch.zeros(3, 2))
    'shape: expected (2, 3), got (3, 2)'
    >>> difference(0.5, 0.5) is None
    True
    """
    expected, got = _canon(expected), _canon(got)
    at = f"at {where}: " if where else ""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            try:
                got = torch.as_tensor(got)
            except Exception:
                return f"{at}expected a tensor, got {type(got).__name__}"
        if tuple(got.shape) != tuple(expected.shape):
            return f"{at}shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}"
        if not (got.dtype.is_floating_point or got.dtype in (torch.bool, torch.int64, torch.int32,
                                                             torch.int16, torch.int8, torch.uint8)):
            return f"{at}expected real numbers, got dtype {got.dtype}"
        e, g = expected.detach().double().cpu(), got.detach().double().cpu()
        close = torch.isclose(g, e, rtol=1e-4, atol=1e-5, equal_nan=True)
        if bool(close.all()):
            return None
        if expected.dim() == 0:
            return f"{at}expected {_num(expected.item())}, got {_num(got.item())}"
        i = tuple(int(j) for j in (~close).nonzero()[0])
        return (f"{at}first difference at index {list(i)}: expected {_num(expected[i].item())}, "
                f"got {_num(got[i].item())} ({int((~close).sum())} of {close.numel()} entries differ)")
    if isinstance(expected, list):
        if not isinstance(got, list):
            if isinstance(got, torch.Tensor):
                got = got.tolist()
            else:
                return f"{at}expected a list, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"{at}length: expected {len(expected)}, got {len(got)}"
        for j, (e, g) in enumerate(zip(expected, got)):
            why = difference(e, g, f"{where}[{j}]")
            if why:
                return why
        return None
    if isinstance(expected, float):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"{at}expected a number, got {type(got).__name__}"
        if math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9):
            return None
        return f"{at}expected {_num(expected)}, got {_num(got)}"
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    return None if got == expected else f"{at}expected {_show(expected)}, got {_show(got)}"


def _num(x, digits: int = 6) -> str:
    """A number for a verdict: floats to ``digits`` significant digits, still looking like floats.

    >>> _num(1.0), _num(0.123456789), _num(7)
    ('1.0', '0.123457', '7')
    """
    if not isinstance(x, float):
        return repr(x)
    text = f"{x:.{digits}g}"
    return text + ".0" if text.lstrip("-").isdigit() else text


def _fmt(v: Any) -> str:
    """Nested lists of numbers with floats to 4 significant digits."""
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(e) for e in v) + "]"
    return _num(v, 4)


def _show(x: Any, width: int = 160) -> str:
    """A value abbreviated to about one line: shapes and the first values of a big tensor."""
    if isinstance(x, torch.Tensor):
        head = f"tensor of shape {tuple(x.shape)}, dtype {str(x.dtype).replace('torch.', '')}"
        if x.numel() == 0:
            return head
        vals = x.detach().cpu().tolist()
        if x.numel() > 24:                                      # big: its first values, flat
            first = x.detach().cpu().flatten()[:8].tolist()
            return f"{head}, first values {_fmt(first)[:-1]}, ...]"
        text = _fmt(vals)
        if x.dim() == 2 and x.numel() <= 64 and x.size(0) > 1:
            text = "\n" + "\n".join("      " + _fmt(r) for r in vals)
            return f"{head}:{text}"
        return f"{head}: {text if len(text) <= width else text[:width] + ' ...'}"
    if type(x).__module__ == "numpy" and getattr(x, "ndim", None) == 0:      # np.float64(...) -> float
        x = x.item()
    if isinstance(x, float):
        return _num(x)
    if isinstance(x, tuple) and x and all(isinstance(e, (int, float)) or type(e).__module__ == "numpy"
                                          for e in x):                          # (N_opt, D_opt)
        return "(" + ", ".join(_show(e, width) for e in x) + ")"
    if isinstance(x, tuple) and x and all(isinstance(e, torch.Tensor) for e in x):   # (advantages, returns)
        return f"a tuple of {len(x)}:" + "".join(f"\n    [{i}] " + _show(e, width).replace("\n", "\n    ")
                                                  for i, e in enumerate(x))
    if isinstance(x, (set, frozenset)):
        items = sorted(x, key=repr)
        text = "{" + ", ".join(repr(i) for i in items[:12]) + (", ..." if len(items) > 12 else "") + "}"
        return text if x else "set()"
    if isinstance(x, (list, tuple)) and len(x) > 20:
        return repr(list(x[:16]))[:-1] + f", ... ({len(x)} items)]"
    text = repr(x)
    return text if len(text) <= width else text[:width] + " ..."


# --------------------------------------------------------------------------------------------
# 3. The check
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    """What :func:`check` found: ``status`` is "passed", "failed", "error" or "not attempted"."""

    name: str
    status: str
    message: str                   # the verdict as printed
    n_cases: int = 0               # cases run (the failing one included)
    case: tuple | None = None      # the failing input
    expected: Any = None
    got: Any = None
    hint: str | None = None        # the matched classic wrong answer's hint, if any
    wrong: str | None = None       # the matched classic wrong answer's label

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def attempted(self) -> bool:
        return self.status != "not attempted"

    def __repr__(self) -> str:
        return f"<exercise {self.name}: {self.status}>"


class _TooSlow(Exception):
    pass


def _call(fn: Callable, args: tuple, seconds: float = TIME_LIMIT_S):
    """``fn(*args)`` on a deep copy of the arguments (so an in-place edit cannot touch the
    reference's input), stopped after ``seconds`` where the platform allows (main thread)."""
    args = copy.deepcopy(args)
    use_alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not use_alarm:
        return fn(*args)

    def on_alarm(signum, frame):
        raise _TooSlow()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def cases(ex: Exercise, seed: int = 0) -> list[tuple[str, tuple]]:
    """The exercise's inputs as ``(label, args)``: the fixed ones, then seeded random ones."""
    rng = random.Random(seed)
    out = [(f"fixed case {i + 1} of {len(ex.fixed)}", tuple(a)) for i, a in enumerate(ex.fixed)]
    out += [(f"random case {i + 1} of {ex.n_random} (seed {seed})", tuple(ex.random_case(rng)))
            for i in range(ex.n_random)]
    return out


def _show_input(ex: Exercise, args: tuple) -> str:
    names = list(ex.arg_names) + [f"arg{i}" for i in range(len(ex.arg_names), len(args))]
    lines = []
    for n, a in zip(names, args):
        lines.append(f"    {n} = {_show(a)}")
    return "\n".join(lines)


def _learner_line(exc: BaseException) -> str:
    """Where in the learner's code the exception was raised: the deepest frame that is not in
    llmlab or an installed library."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(str(Path(__file__).parent))
              and "site-packages" not in f.filename and "dist-packages" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    code = f" `{f.line.strip()}`" if f.line else ""
    return f"\n  raised in {f.name}, line {f.lineno}:{code}"


def _match_wrong(ex: Exercise, args: tuple, got: Any, learner: Callable,
                 all_cases: list) -> Wrong | None:
    """The classic wrong answer whose output equals the learner's on the failing input;
    when several do, the one that also agrees with the learner on the most other cases."""
    matches = []
    for w in ex.wrongs:
        try:
            if difference(_call(w.fn, args), got) is None:
                matches.append(w)
        except Exception:
            continue
    if len(matches) <= 1:
        return matches[0] if matches else None

    def agreement(w: Wrong) -> int:
        n = 0
        for _, other in all_cases[:len(ex.fixed)]:
            try:
                n += difference(_call(w.fn, other), _call(learner, other)) is None
            except Exception:
                pass
        return n

    return max(matches, key=agreement)              # the first among equals


def check(name: str, fn: Callable, seed: int = 0, quiet: bool = False) -> Result:
    """Run the learner's ``fn`` on exercise ``name``'s cases against the package's reference and
    print a verdict; return it as a :class:`Result` (``.passed``).

    Fixed cases come first, then ``n_random`` random ones drawn with ``seed``. The first case
    whose output differs (or raises) is reported with its input, the expected and the actual
    output, and the hint of the classic wrong answer it matches. A function that raises
    ``NotImplementedError`` is "not attempted yet".
    """
    if name not in EXERCISES:
        msg = f"? no exercise named {name!r}; the exercises are: {', '.join(EXERCISES)}"
        return _finish(Result(name, "error", msg), quiet)
    ex = EXERCISES[name]
    if not callable(fn):
        msg = (f"✗ {name}: check needs your function itself, got {type(fn).__name__} "
               f"(write exercises.check({name!r}, my_function) without calling it)")
        return _finish(Result(name, "error", msg), quiet)
    todo = cases(ex, seed)
    for n, (label, args) in enumerate(todo, 1):
        expected = _call(ex.reference, args)
        try:
            got = _call(fn, args)
        except NotImplementedError:
            msg = (f"○ {name}: not attempted yet. Write your function in the cell above (it "
                   f"still raises NotImplementedError), run it, then run this cell again.")
            return _finish(Result(name, "not attempted", msg, n_cases=n - 1), quiet)
        except _TooSlow:
            msg = (f"✗ {name}: your function did not finish within {TIME_LIMIT_S:g} s on "
                   f"{label} (an endless loop?).\n  input:\n{_show_input(ex, args)}")
            return _finish(Result(name, "error", msg, n, args, expected), quiet)
        except Exception as exc:                                # the learner's bug, reported
            kind = type(exc).__name__
            hint = ex.error_hints.get(kind)
            msg = (f"✗ {name}: your function raised {kind}: {exc} on {label}."
                   f"{_learner_line(exc)}\n  input:\n{_show_input(ex, args)}\n"
                   f"  expected: {_show(expected)}")
            if hint:
                msg += f"\n  hint: {hint}"
            return _finish(Result(name, "error", msg, n, args, expected, None, hint), quiet)
        why = difference(expected, got)
        if why is None:
            continue
        wrong = _match_wrong(ex, args, got, fn, todo)
        msg = (f"✗ {name}: wrong output on {label} ({n - 1} passed before it).\n"
               f"  input:\n{_show_input(ex, args)}\n"
               f"  expected: {_show(expected)}\n  got:      {_show(got)}\n  {why}")
        if wrong:
            msg += f"\n  hint: {wrong.hint}"
        return _finish(Result(name, "failed", msg, n, args, expected, got,
                              wrong.hint if wrong else None, wrong.label if wrong else None), quiet)
    msg = (f"✓ {name}: correct. Your function agrees with {ex.reference_name} on "
           f"{len(ex.fixed)} fixed and {ex.n_random} random cases.")
    return _finish(Result(name, "passed", msg, len(todo)), quiet)


def _finish(result: Result, quiet: bool) -> Result:
    if not quiet:
        print(result.message)
    return result


# --------------------------------------------------------------------------------------------
# 4. Two editions: the instructor's (committed) and the student's (generated)
# --------------------------------------------------------------------------------------------


def instructions_markdown(name: str) -> str:
    """The markdown cell that opens an exercise in a notebook."""
    ex = EXERCISES[name]
    return (f"**Exercise: {ex.title}** (`{name}`)\n\n{ex.instructions}\n\n"
            f"The cell after your function checks it against the package's "
            f"`{ex.reference_name}` on fixed and random inputs, and says which input fails and "
            f"why.")


def stub_source(solution: str, name: str) -> str:
    """The student's version of a solution cell: its imports, then each function's signature
    with the exercise's instructions as the docstring and a body that raises
    ``NotImplementedError``.

    >>> print(stub_source("import torch\\n\\ndef my_f(a, b=1):\\n    return a + b\\n", "jaccard").splitlines()[2])
    def my_f(a, b=1):
    """
    import textwrap

    ex = EXERCISES[name]
    tree = ast.parse(solution)
    doc = "\n\n".join(textwrap.fill(" ".join(par.split()), 88, initial_indent="    ",
                                    subsequent_indent="    ", break_on_hyphens=False)
                      for par in ex.instructions.split("\n\n"))
    parts = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            parts.append(ast.get_source_segment(solution, node))
        elif isinstance(node, ast.FunctionDef):
            parts.append(f"\ndef {node.name}({ast.unparse(node.args)}):\n"
                         f'    """{doc.strip()}\n    """\n'
                         f"    # your code here\n"
                         f"    raise NotImplementedError(\"exercise {name}: write this function, "
                         f"then run the check below\")")
    return "\n".join(parts).strip()


def student_notebook(nb) -> int:
    """Turn an instructor notebook (nbformat node) into the student edition, in place: solution
    cells become stubs, every output and execution count is cleared. Returns the number of
    solution cells replaced."""
    n = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        if SOLUTION_TAG in tags:
            name = cell.metadata.get("exercise") or _exercise_after(nb.cells, i)
            cell.source = stub_source(cell.source, name)
            n += 1
        cell.outputs = []
        cell.execution_count = None
    nb.metadata.pop("widgets", None)
    return n


def _exercise_after(cells, i: int) -> str:
    """The exercise a solution cell belongs to: the name in the next check cell."""
    import re

    for cell in cells[i + 1:]:
        if CHECK_TAG in cell.metadata.get("tags", []):
            found = re.search(r"check\(\s*[\"'](\w+)[\"']", cell.source)
            if found:
                return found.group(1)
    raise ValueError(f"solution cell {i} has no check cell after it")


def student_edition(out: str | Path, notebooks: list[Path] | None = None) -> list[Path]:
    """Write the student edition of every notebook (or of ``notebooks``) into ``out``."""
    import nbformat

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = notebooks or sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    written = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        student_notebook(nb)
        target = out / Path(path).name
        nbformat.write(nb, target)
        written.append(target)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m llmlab.exercises",
        description="Checked exercises: list them, or write the student edition of the notebooks.")
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("student", help="write the student edition (solutions replaced by stubs)")
    st.add_argument("--out", default=str(REPO / "student"), help="output folder (default: student/)")
    sub.add_parser("list", help="list the exercises and their classic wrong answers")
    args = ap.parse_args(argv)
    if args.command == "list":
        for ex in EXERCISES.values():
            print(f"{ex.notebook}  {ex.name:15} {ex.title} (checked against {ex.reference_name})")
            for w in ex.wrongs:
                print(f"      classic wrong answer: {w.label}")
        return 0
    written = student_edition(args.out)
    n = sum(1 for _ in written)
    print(f"student edition: {n} notebooks in {args.out} (solution cells replaced by stubs, "
          f"outputs cleared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
