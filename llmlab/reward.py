"""The reward model: a transformer that scores a (prompt, reply) with one number (notebook 05).

The classic reward model is the SFT model with its language-model head replaced by a scalar head
(:class:`llmlab.model.ScalarModel`), read at the **last token of the reply** -- the chat
template's stop token, which has attended to the whole prompt and reply (InstructGPT, Ouyang
et al. 2022, Sec. 3.5). This series' reward model, :class:`LikelihoodRewardModel`, adds the
reply's log-likelihood under the body's own language-model head with a learned weight,
``R(x, y) = w . h_last + b + a log p(y | x)``: on held-out entities the head alone cannot tell a
right fact from a wrong one, the language model can (notebook 05, section 4, measures both).
Either learns from preference pairs with the Bradley-Terry loss

    loss = -log sigmoid(R(x, y_w) - R(x, y_l))            (InstructGPT, Eq. 1)

so that ``sigmoid(R_w - R_l)`` predicts which reply the annotator picked. This module holds

1. the objective (notebook 05, section 3): :func:`encode_pair` (prompt + reply tokens and the
   indices of the reply's first and last tokens), :func:`reward_batch_fn` (right-padded
   batches), :func:`rewards_at` (the scalar head read at one position per row, plus the
   likelihood term of a :class:`LikelihoodRewardModel`, :func:`reply_logprob`), :func:`bt_loss` (the
   formula above as a pure function of two reward tensors) and :func:`reward_loss` (the
   ``loss_fn`` for :func:`llmlab.train.train`, the loop every stage shares);
2. the recipe: :func:`train_reward_model` from SFT, base or random weights (sections 3 and 5);
3. the measurements (sections 4 and 6): :func:`score_pairs`, :func:`score_replies`,
   :func:`pair_accuracy`, :func:`pair_share` (an accuracy with its interval counted by prompt),
   :func:`wilson_interval`, :func:`length_baseline`,
   :func:`calibration_bins`, :func:`spearman`, :func:`length_slope`, and
   :func:`likelihood_pairs` (the ranking a language model gives with no preference training).
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F

from . import chat, sft
from .evaluate import fmt_share, share, wilson_interval
from .model import GPT, ScalarModel, gather_at

# --------------------------------------------------------------------------------------------
# 1. The objective
# --------------------------------------------------------------------------------------------


def encode_reply(messages: list[dict], reply: str, tok, template: str = "chatml") -> tuple[list[int], int]:
    """Token ids of ``messages`` plus the assistant's ``reply``, cut after the reply's last
    token (the template's stop token), and the index of that token.

    The reward head is read at that index: its hidden state has attended to the prompt and the
    whole reply, and anything after it (the template's newline, padding) cannot change it.
    """
    ids, first, last = encode_reply_span(messages, reply, tok, template)
    return ids, last


def encode_reply_span(messages: list[dict], reply: str, tok,
                      template: str = "chatml") -> tuple[list[int], int, int]:
    """:func:`encode_reply` with the index of the reply's first token as well:
    ``(ids, first, last)``. The reply is ``ids[first:last + 1]`` (its stop token included),
    the span whose log-likelihood a :class:`LikelihoodRewardModel` reads."""
    ids, mask = chat.tokenize_chat(list(messages) + [{"role": "assistant", "content": reply}], tok, template)
    span = [i for i, m in enumerate(mask) if m]
    return ids[:span[-1] + 1], span[0], span[-1]


def encode_pair(pair: dict, tok, template: str, block_size: int) -> dict | None:
    """``{"chosen", "chosen_first", "chosen_last", "rejected", "rejected_first",
    "rejected_last"}`` of one preference pair, or None when either sequence is longer than
    ``block_size``."""
    ch, ch_first, ch_last = encode_reply_span(pair["messages"], pair["chosen"], tok, template)
    rj, rj_first, rj_last = encode_reply_span(pair["messages"], pair["rejected"], tok, template)
    if max(len(ch), len(rj)) > block_size:
        return None
    return {"chosen": ch, "chosen_first": ch_first, "chosen_last": ch_last,
            "rejected": rj, "rejected_first": rj_first, "rejected_last": rj_last}


def encode_pairs(pairs: list[dict], tok, template: str, block_size: int) -> tuple[list, list]:
    """Encode many pairs; returns ``(encoded, kept pairs)`` (pairs too long are dropped)."""
    enc, kept = [], []
    for p in pairs:
        e = encode_pair(p, tok, template, block_size)
        if e is not None:
            enc.append(e)
            kept.append(p)
    return enc, kept


def pad_right(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad token lists to the longest: (B, T_max). Causal attention never lets a real
    token see padding that comes after it, so the reward read at the reply's last token does
    not depend on how much padding follows."""
    T = max(len(s) for s in seqs)
    x = torch.full((len(seqs), T), pad_id, dtype=torch.long)                  # (B, T)
    for b, s in enumerate(seqs):
        x[b, :len(s)] = torch.tensor(s, dtype=torch.long)
    return x


def collate_pairs(encoded: list[dict], pad_id: int) -> dict:
    """A batch of encoded pairs, right-padded to the longest sequence of the batch.

    Returns ``{"idx": (B, 2, T), "first": (B, 2), "last": (B, 2)}``: ``[:, 0]`` is the chosen
    reply and ``[:, 1]`` the rejected one. The pair is the first dimension, as the shared loop expects of
    every batch (it shards and counts rows along it), and one forward pass scores both replies.
    """
    seqs = [s for e in encoded for s in (e["chosen"], e["rejected"])]
    first = [[e["chosen_first"], e["rejected_first"]] for e in encoded]
    last = [[e["chosen_last"], e["rejected_last"]] for e in encoded]
    idx = pad_right(seqs, pad_id)                                              # (2B, T)
    return {"idx": idx.view(len(encoded), 2, -1), "first": torch.tensor(first, dtype=torch.long),
            "last": torch.tensor(last, dtype=torch.long)}


def reward_batch_fn(pad_id: int) -> Callable:
    """A ``batch_fn`` for :func:`llmlab.train.train`: ``batch_size`` random pairs, collated."""
    def batch_fn(data: list[dict], batch_size: int, generator: torch.Generator) -> dict:
        ix = torch.randint(len(data), (batch_size,), generator=generator)       # (B,)
        return collate_pairs([data[i] for i in ix.tolist()], pad_id)
    return batch_fn


def reply_logprob(logits: torch.Tensor, idx: torch.Tensor, first: torch.Tensor,
                  last: torch.Tensor) -> torch.Tensor:
    """log p(reply | prompt): the sum of the log-probabilities of tokens ``first..last`` of
    each row, each predicted from the position before it. (B, T, V), (B, T), (B,), (B,) -> (B,).

    >>> logits = torch.zeros(1, 3, 4)                       # uniform over 4 tokens
    >>> round(reply_logprob(logits, torch.tensor([[0, 1, 2]]), torch.tensor([1]), torch.tensor([2])).item(), 4)
    -2.7726
    """
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)                     # (B, T-1, V)
    lp = lp.gather(-1, idx[:, 1:, None]).squeeze(-1)                           # (B, T-1): token t+1
    t = torch.arange(1, idx.size(1), device=idx.device)[None]                   # (1, T-1)
    span = (t >= first[:, None]) & (t <= last[:, None])                        # (B, T-1)
    return (lp * span).sum(dim=1)                                              # (B,)


class LikelihoodRewardModel(ScalarModel):
    """A reward model that also reads its own language model (notebook 05, section 3):

        R(x, y) = w . h_last + b + a * log p(y | x)

    the scalar head at the reply's last token, as in :class:`~llmlab.model.ScalarModel`, plus a
    learned weight ``a`` (``likelihood_weight``) times the log-likelihood of the reply under the
    body's own language-model head (kept, tied to the embedding). Why: whether "X worked as a
    doctor" is true of a held-out entity is what the language model predicts at the token
    "doctor"; a head reading one hidden state after the reply would have to learn that
    comparison from the pairs, and from a few thousand pairs about other entities it does not
    (notebook 05 measures both). PPO's critic copies the body and head only
    (:func:`llmlab.ppo.value_model_from`).
    """

    def __init__(self, body: GPT, likelihood_weight: float = 0.0):
        super().__init__(body, kind="reward")
        self.likelihood_weight = torch.nn.Parameter(torch.tensor(float(likelihood_weight)))

    def forward(self, idx: torch.Tensor, first: torch.Tensor | None = None,
                last: torch.Tensor | None = None) -> torch.Tensor:
        """``idx`` (B, T) -> the head at every position (B, T); with ``first`` and ``last``
        (B,) -> the reward of each row's reply ``first..last`` (B,)."""
        if first is None or last is None:
            return super().forward(idx)
        head, likelihood = self.parts(idx, first, last)
        return head + likelihood

    def parts(self, idx: torch.Tensor, first: torch.Tensor,
              last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward's two terms apart: the head's ``w . h_last + b`` and the weighted
        ``a * log p(y | x)``. (B, T), (B,), (B,) -> (B,), (B,)."""
        h = self.body.body(idx)                                                # (B, T, C)
        head = gather_at(self.head(h).squeeze(-1).float(), last)               # (B,)
        return head, self.likelihood_weight * reply_logprob(self.body.lm_head(h), idx, first, last)


def reads_likelihood(model) -> bool:
    """Whether ``model`` (or the module a DDP wrapper holds) is a :class:`LikelihoodRewardModel`."""
    return isinstance(getattr(model, "module", model), LikelihoodRewardModel)


def rewards_at(model: ScalarModel, idx: torch.Tensor, last: torch.Tensor,
               first: torch.Tensor | None = None) -> torch.Tensor:
    """The reward of each row: the scalar head read at position ``last``, plus, for a
    :class:`LikelihoodRewardModel`, its weighted log-likelihood of tokens ``first..last``.
    idx (B, T) -> (B,)."""
    if reads_likelihood(model):
        if first is None:
            raise ValueError("a LikelihoodRewardModel reads log p(reply | prompt): pass `first`, "
                             "the index of each reply's first token")
        return model(idx, first, last)                                         # (B,)
    return gather_at(model(idx), last)                                         # (B,)


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry loss, InstructGPT Eq. 1: ``mean(-log sigmoid(r_w - r_l))``. (B,), (B,) -> ().

    ``logsigmoid`` computes ``-log(1 + exp(-d))`` without overflow for large margins.

    >>> round(bt_loss(torch.tensor([1.0]), torch.tensor([0.0])).item(), 4)   # log(1 + e^-1)
    0.3133
    >>> round(bt_loss(torch.tensor([0.0]), torch.tensor([0.0])).item(), 4)   # log 2
    0.6931
    """
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def reward_loss(model: ScalarModel, batch: dict) -> tuple[torch.Tensor, dict]:
    """The reward model's objective for :func:`llmlab.train.train`: score chosen and rejected
    replies in one pass, then :func:`bt_loss`. Metrics: pairwise accuracy and mean margin."""
    idx, last = batch["idx"], batch["last"]                                    # (B, 2, T), (B, 2)
    first = batch["first"].flatten() if "first" in batch else None             # (2B,)
    r = rewards_at(model, idx.flatten(0, 1), last.flatten(), first).view(-1, 2)  # (B, 2)
    r_w, r_l = r[:, 0], r[:, 1]                                                # (B,) each
    loss = bt_loss(r_w, r_l)
    return loss, {"accuracy": (r_w > r_l).float().mean().item(),
                  "margin": (r_w - r_l).mean().item()}


# --------------------------------------------------------------------------------------------
# 2. Training
# --------------------------------------------------------------------------------------------

INITS = ("sft", "base", "random")


def reward_model_from(lm: GPT | None, config=None, likelihood_weight: float | None = None) -> ScalarModel:
    """A reward model whose body is a copy of ``lm`` (SFT or base weights), or a freshly
    initialised GPT of ``config`` when ``lm`` is None (random init). ``likelihood_weight``:
    None gives the classic :class:`~llmlab.model.ScalarModel` (head only); a number gives a
    :class:`LikelihoodRewardModel` whose weight on log p(reply | prompt) starts there."""
    body = copy.deepcopy(lm).cpu() if lm is not None else GPT(config)
    if likelihood_weight is None:
        return ScalarModel(body, kind="reward")
    return LikelihoodRewardModel(body, likelihood_weight)


def load_reward_model(path, device=None) -> ScalarModel:
    """A reward model checkpoint written by :func:`build_reward_model`, rebuilt as the class it
    was saved from (a :class:`LikelihoodRewardModel` when it holds a likelihood weight)."""
    from .config import ModelConfig
    from .train import load_checkpoint

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:   # missing or damaged: load_checkpoint below says which
        ckpt = None
    model = None
    if isinstance(ckpt, dict) and "likelihood_weight" in ckpt.get("model", {}):
        model = LikelihoodRewardModel(GPT(ModelConfig(**ckpt["model_config"])))
    return load_checkpoint(path, model, device=device)[0]


def reward_train_config(rcfg, train_cfg, max_steps: int | None = None):
    """The shared loop's :class:`~llmlab.config.TrainConfig` for the reward model."""
    from .train import fine_tune_config

    steps = rcfg.max_steps if max_steps is None else max_steps
    return fine_tune_config(train_cfg, lr=rcfg.lr, max_steps=steps, batch_size=rcfg.batch_size,
                            warmup_steps=min(rcfg.warmup_steps, steps // 5),
                            weight_decay=rcfg.weight_decay,
                            eval_every=max(1, min(rcfg.eval_every, steps)),
                            eval_batches=rcfg.eval_batches, seed=rcfg.seed)


def train_reward_model(model: ScalarModel, train_enc: list[dict], val_enc: list[dict], cfg,
                       pad_id: int, device=None, callback: Callable | None = None,
                       progress: bool = True):
    """Train ``model`` in place on encoded pairs (notebook 05, section 3); returns the loop's
    :class:`~llmlab.train.TrainResult` (``val_metrics`` holds the validation accuracy).

    This is pretraining's and SFT's loop, :func:`llmlab.train.train`, given a different
    batch (:func:`reward_batch_fn`) and objective (:func:`reward_loss`).
    """
    from .train import train

    return train(model, train_enc, val_enc, cfg, device=device, callback=callback,
                 batch_fn=reward_batch_fn(pad_id), loss_fn=reward_loss, progress=progress)


# --------------------------------------------------------------------------------------------
# 3. Scoring
# --------------------------------------------------------------------------------------------


def _in_batches(seqs: list[list[int]], firsts: list[int] | None, lasts: list[int], pad_id: int,
                score: Callable, device, batch_size: int) -> list[float]:
    """``score(idx (B, T), first (B,) or None, last (B,)) -> (B,)`` over token sequences sorted
    by length into right-padded batches; the results come back in the order of ``seqs``."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = [0.0] * len(seqs)
    for s in range(0, len(order), batch_size):
        grp = order[s:s + batch_size]
        idx = pad_right([seqs[i] for i in grp], pad_id).to(device)             # (B, T)
        last = torch.tensor([lasts[i] for i in grp], device=device)            # (B,)
        first = None if firsts is None else torch.tensor([firsts[i] for i in grp], device=device)
        for i, r in zip(grp, score(idx, first, last).tolist()):
            out[i] = r
    return out


@torch.no_grad()
def score_sequences(model: ScalarModel, seqs: list[list[int]], lasts: list[int], pad_id: int,
                    batch_size: int = 64, firsts: list[int] | None = None) -> list[float]:
    """Rewards of token sequences read at ``lasts`` (sequences sorted by length into batches);
    ``firsts`` (each reply's first token) is needed by a :class:`LikelihoodRewardModel`."""
    was = model.training
    model.eval()
    out = _in_batches(seqs, firsts, lasts, pad_id,
                      lambda idx, first, last: rewards_at(model, idx, last, first),
                      next(model.parameters()).device, batch_size)
    model.train(was)
    return out


def _pair_sequences(encoded: list[dict]) -> tuple[list, list, list]:
    """Every chosen reply's sequence, first and last index, then every rejected reply's."""
    seqs = [e["chosen"] for e in encoded] + [e["rejected"] for e in encoded]
    firsts = [e["chosen_first"] for e in encoded] + [e["rejected_first"] for e in encoded]
    lasts = [e["chosen_last"] for e in encoded] + [e["rejected_last"] for e in encoded]
    return seqs, firsts, lasts


def score_pairs(model: ScalarModel, encoded: list[dict], pad_id: int) -> tuple[list, list]:
    """``(rewards of the chosen replies, rewards of the rejected replies)``."""
    seqs, firsts, lasts = _pair_sequences(encoded)
    r = score_sequences(model, seqs, lasts, pad_id, firsts=firsts)
    return r[:len(encoded)], r[len(encoded):]


@torch.no_grad()
def pair_parts(model: LikelihoodRewardModel, encoded: list[dict], pad_id: int,
               batch_size: int = 64) -> dict:
    """The two terms of a :class:`LikelihoodRewardModel`'s reward on every pair, apart:
    ``{"head": (chosen, rejected), "likelihood": (chosen, rejected)}``, lists of floats whose
    sums are :func:`score_pairs` (notebook 05, section 6: what each term prefers)."""
    m = getattr(model, "module", model)
    if not isinstance(m, LikelihoodRewardModel):
        raise TypeError(f"pair_parts needs a LikelihoodRewardModel (head + a * log p); got {type(m).__name__}, "
                        "whose reward is its head alone")
    seqs, firsts, lasts = _pair_sequences(encoded)
    was = m.training
    m.eval()
    rows = _in_batches(seqs, firsts, lasts, pad_id,
                       lambda idx, first, last: torch.stack(m.parts(idx, first, last), dim=1),  # (B, 2)
                       next(m.parameters()).device, batch_size)
    m.train(was)
    n = len(encoded)
    head, lik = [r[0] for r in rows], [r[1] for r in rows]
    return {"head": (head[:n], head[n:]), "likelihood": (lik[:n], lik[n:])}


def gold_hits(pairs: list[dict], r_chosen, r_rejected) -> list[bool]:
    """Per pair, whether the scores order the two replies as the gold judge does (the labels'
    noise left out).

    >>> gold_hits([{"gold_chosen": 2, "gold_rejected": 0}, {"gold_chosen": -1, "gold_rejected": 1}],
    ...           [1.0, 1.0], [0.0, 0.0])
    [True, False]
    """
    return [(a > b) == (p["gold_chosen"] > p["gold_rejected"]) for p, a, b in zip(pairs, r_chosen, r_rejected)]


def score_replies(model: ScalarModel, tok, conversations: list[list[dict]], replies: list[str],
                  template: str = "chatml") -> list[float]:
    """The reward of each reply to its conversation (what PPO and the quiz ask for). A
    conversation longer than the block keeps its last ``block_size`` tokens."""
    enc = [encode_reply_span(c, r, tok, template) for c, r in zip(conversations, replies)]
    block = model.config.block_size
    seqs = [ids[-block:] for ids, _, _ in enc]
    cut = [max(0, len(ids) - block) for ids, _, _ in enc]
    firsts = [max(first - d, 1) for (_, first, _), d in zip(enc, cut)]
    lasts = [last - d for (_, _, last), d in zip(enc, cut)]
    return score_sequences(model, seqs, lasts, tok.pad_id, firsts=firsts)


@torch.no_grad()
def likelihood_pairs(lm: GPT, encoded: list[dict], pad_id: int, batch_size: int = 64) -> tuple[list, list]:
    """``log p(reply | prompt)`` of each chosen and each rejected reply under the language
    model ``lm``: the ranking of the pairs a model gives with no preference training at all
    (notebook 05, section 4, beside the reward models)."""
    was = lm.training
    lm.eval()
    seqs, firsts, lasts = _pair_sequences(encoded)
    out = _in_batches(seqs, firsts, lasts, pad_id,
                      lambda idx, first, last: reply_logprob(lm(idx)[0], idx, first, last),
                      next(lm.parameters()).device, batch_size)
    lm.train(was)
    return out[:len(encoded)], out[len(encoded):]


# --------------------------------------------------------------------------------------------
# 4. Metrics
# --------------------------------------------------------------------------------------------


def pair_accuracy(r_chosen, r_rejected) -> tuple[int, int]:
    """``(pairs where the chosen reply scores higher, pairs)``; a tie counts as wrong.

    >>> pair_accuracy([1.0, 0.2, 0.5], [0.0, 0.3, 0.5])
    (1, 3)
    """
    k = sum(a > b for a, b in zip(r_chosen, r_rejected))
    return int(k), len(list(r_chosen))


def prompt_of(pair: dict) -> tuple:
    """What makes two pairs comparisons on the *same* prompt: the conversation's texts.

    >>> prompt_of({"messages": [{"role": "user", "content": "Hi?"}]})
    ('Hi?',)
    """
    return tuple(m["content"] for m in pair["messages"])


def pair_share(hits, pairs: list[dict]) -> dict:
    """A pairwise accuracy, ``hits`` (one bool per pair) over ``pairs``, with its 95% interval
    counted by prompt (:func:`llmlab.evaluate.share`): the held-out set holds several pairs on
    one prompt (two replies compared more than once, or one prompt drawn twice), and pairs on
    one prompt agree more often than pairs on different prompts, so they carry less than as
    many independent pairs. Returns the share dict (``rate``, ``k``, ``n``, ``ci``, ``n_eff``,
    ``prompts``).

    >>> ps = [{"messages": [{"role": "user", "content": q}]} for q in "aabbccdd"]
    >>> pair_share([True] * 4 + [False] * 4, ps)["n_eff"]     # one verdict per prompt: not 8
    3.0
    >>> pair_share([True, False] * 4, ps)["n_eff"]            # no agreement within a prompt
    8.0
    """
    groups: dict = {}
    for h, p in zip(hits, pairs):
        g = groups.setdefault(prompt_of(p), [0, 0])
        g[0] += int(bool(h))
        g[1] += 1
    return share(sum(g[0] for g in groups.values()), len(pairs), [tuple(g) for g in groups.values()])


def paired_accuracy_difference(hits_a, hits_b, pairs: list[dict], z: float = 1.96) -> dict:
    """Accuracy of ranker a minus ranker b on the *same* pairs, with a 95% interval counted by
    prompt: ``{"diff", "ci", "n", "prompts"}``.

    Both rankers judged every pair, so the difference is taken pair by pair (a pair both get
    right, or both wrong, adds nothing), which is tighter than comparing two separate intervals.
    Pairs on one prompt are one cluster: with ``d_j`` the summed differences and ``n_j`` the
    pairs of prompt ``j`` (``m`` prompts), ``D = sum d_j / sum n_j`` and
    ``var D = m / (m - 1) * sum (d_j - D n_j)^2 / (sum n_j)^2`` (the cluster-robust variance of
    a ratio estimate; Cochran 1977, Sec. 6.11).

    >>> ps = [{"messages": [{"role": "user", "content": q}]} for q in "abcd"]
    >>> r = paired_accuracy_difference([1, 1, 1, 0], [1, 0, 0, 0], ps)
    >>> r["diff"], r["n"], r["prompts"], [round(x, 3) for x in r["ci"]]
    (0.5, 4, 4, [-0.066, 1.066])
    """
    groups: dict = {}
    for a, b, p in zip(hits_a, hits_b, pairs):
        g = groups.setdefault(prompt_of(p), [0.0, 0])
        g[0] += float(bool(a)) - float(bool(b))
        g[1] += 1
    n, m = sum(g[1] for g in groups.values()), len(groups)
    if n == 0:
        return {"diff": float("nan"), "ci": [float("nan"), float("nan")], "n": 0, "prompts": 0}
    d = sum(g[0] for g in groups.values()) / n
    var = (m / (m - 1) * sum((g[0] - d * g[1]) ** 2 for g in groups.values()) / n ** 2) if m > 1 else float("nan")
    half = z * math.sqrt(var) if var == var else float("nan")
    return {"diff": d, "ci": [d - half, d + half], "n": n, "prompts": m}


def accuracy_where(ev: dict, keep: Callable[[dict], bool], temperature: float) -> dict:
    """Accuracy against the labels on the pairs of an :func:`evaluate` result that ``keep``
    selects: :func:`pair_share`'s dict (interval counted by prompt) plus the ``ceiling`` of
    those pairs (:func:`llmlab.prefs.ceiling_accuracy`) and the ``gap`` to it; ``{"n": 0}``
    when ``keep`` selects none."""
    from . import prefs

    rows = [(a > b, q) for a, b, q in zip(ev["r_chosen"], ev["r_rejected"], ev["pairs"]) if keep(q)]
    if not rows:
        return {"n": 0}
    share = pair_share([h for h, _ in rows], [q for _, q in rows])
    ceiling = prefs.ceiling_accuracy([q["gold_chosen"] - q["gold_rejected"] for _, q in rows], temperature)
    return {**share, "ceiling": ceiling, "gap": ceiling - share["rate"]}


def fmt_paired_difference(r: dict) -> str:
    """A :func:`paired_accuracy_difference` as the notebooks print it, with what it says."""
    lo, hi = r["ci"]
    verdict = "above 0" if lo > 0 else "below 0" if hi < 0 else "not separated from 0"
    return (f"{r['diff']:+.3f} (paired 95% CI {lo:+.3f} to {hi:+.3f}, n={r['n']} pairs on "
            f"{r['prompts']} prompts: {verdict})")


def fmt_pair_share(s: dict) -> str:
    """A :func:`pair_share` as notebooks 05 and 07 print it:
    ``0.826 (95% CI 0.797-0.851, n=953 pairs on 546 prompts)``."""
    return fmt_share(s, 3, "pairs on")


def fmt_rate(k: int, n: int) -> str:
    """A rate as the series prints it.

    >>> fmt_rate(8, 10)
    '0.800 (95% CI 0.490-0.943, n=10)'
    """
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={n})" if n else "n/a (n=0)"


def length_baseline(train_pairs: list[dict], test_pairs: list[dict]) -> dict:
    """The length-only reward model: prefer the longer reply (or the shorter, whichever is
    right more often on ``train_pairs``); its accuracy on ``test_pairs`` (equal lengths count
    half). Lengths in characters. A reward model must beat this to have learned content."""
    def acc(pairs, sign):
        s = 0.0
        for p in pairs:
            d = sign * (len(p["chosen"]) - len(p["rejected"]))
            s += 1.0 if d > 0 else 0.5 if d == 0 else 0.0
        return s / max(len(pairs), 1)
    sign = 1 if acc(train_pairs, 1) >= acc(train_pairs, -1) else -1
    return {"prefers": "longer" if sign > 0 else "shorter", "accuracy": acc(test_pairs, sign),
            "n": len(test_pairs)}


def calibration_bins(r_chosen, r_rejected, n_bins: int = 10) -> list[dict]:
    """Reliability of ``sigmoid(R_a - R_b)`` as the probability that a is the chosen reply.

    Each pair is shown in both orders (chosen first: outcome 1; rejected first: outcome 0), so
    predictions cover [0, 1] symmetrically. Returns one row per non-empty bin of predicted
    probability: ``{"lo", "hi", "predicted" (mean), "observed" (share chosen), "n"}``.
    """
    preds, outs = [], []
    for a, b in zip(r_chosen, r_rejected):
        p = 1 / (1 + math.exp(-(a - b))) if abs(a - b) < 700 else float(a > b)
        preds += [p, 1 - p]
        outs += [1, 0]
    rows = []
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        sel = [j for j, p in enumerate(preds) if lo <= p < hi or (i == n_bins - 1 and p == 1.0)]
        if sel:
            rows.append({"lo": lo, "hi": hi, "predicted": sum(preds[j] for j in sel) / len(sel),
                         "observed": sum(outs[j] for j in sel) / len(sel), "n": len(sel)})
    return rows


def expected_calibration_error(rows: list[dict]) -> float:
    """Mean |predicted - observed| over the bins of :func:`calibration_bins`, weighted by count."""
    n = sum(r["n"] for r in rows)
    return sum(r["n"] * abs(r["predicted"] - r["observed"]) for r in rows) / max(n, 1)


def ranks(x) -> list[float]:
    """Ranks from 1, ties sharing their average rank.

    >>> ranks([10, 20, 10, 30])
    [1.5, 3.0, 1.5, 4.0]
    """
    x = list(x)
    order = sorted(range(len(x)), key=lambda i: x[i])
    r = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def pearson(x, y) -> float:
    x, y = list(map(float, x)), list(map(float, y))
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks (ties averaged).

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    return pearson(ranks(x), ranks(y))


def length_slope(scores, lengths, golds) -> dict:
    """The reward model's length bias: the slope of RM score against reply length *within*
    groups of equal gold score (each group's means removed, then one pooled least-squares
    slope), in reward per token. Zero means length alone does not move the score."""
    groups: dict = {}
    for s, l, g in zip(scores, lengths, golds):
        groups.setdefault(g, []).append((float(s), float(l)))
    sxy = sxx = 0.0
    n = 0
    for rows in groups.values():
        if len(rows) < 2:
            continue
        ms = sum(s for s, _ in rows) / len(rows)
        ml = sum(l for _, l in rows) / len(rows)
        sxy += sum((s - ms) * (l - ml) for s, l in rows)
        sxx += sum((l - ml) ** 2 for _, l in rows)
        n += len(rows)
    return {"slope_per_token": sxy / sxx if sxx > 0 else float("nan"), "n": n,
            "groups": sum(len(r) >= 2 for r in groups.values())}


# --------------------------------------------------------------------------------------------
# 5. Everything notebook 05 and benchmarks/reward.py report, in one call
# --------------------------------------------------------------------------------------------


def evaluate(model: ScalarModel, tok, train_pairs: list[dict], val_pairs: list[dict],
             fresh: list[dict], temperature: float, template: str = "chatml") -> dict:
    """The reward model measured on held-out pairs and fresh SFT samples (notebook 05, section 4).

    - ``accuracy``: held-out pairs where the chosen reply scores higher (against the noisy
      labels, as on real data), with ``correct``/``n``; ``gold_accuracy``: against the gold
      judge's preference instead; ``accuracy_share``, ``gold_share`` and, per category,
      ``per_category_share``: the same as :func:`pair_share` dicts, whose intervals count
      prompts (several held-out pairs share one);
    - ``ceiling``: :func:`llmlab.prefs.ceiling_accuracy` of the same pairs (the best any model
      can do against these labels) and ``length``: :func:`length_baseline`;
    - ``per_category``: ``{category: (correct, n)}``;
    - ``spearman``: rank correlation of RM scores with gold scores over ``fresh`` samples;
    - ``calibration``: :func:`calibration_bins` rows and their ``ece``.
    Also returns the raw scores (``r_chosen``, ``r_rejected``, ``pairs``, ``fresh_scores``)
    for the figures.
    """
    from . import prefs

    enc, kept = encode_pairs(val_pairs, tok, template, model.config.block_size)
    r_w, r_l = score_pairs(model, enc, tok.pad_id)
    k, n = pair_accuracy(r_w, r_l)
    hits = [a > b for a, b in zip(r_w, r_l)]
    gold_ok = gold_hits(kept, r_w, r_l)
    gold_k = sum(gold_ok)
    deltas = [p["gold_chosen"] - p["gold_rejected"] for p in kept]
    per_cat: dict = {}
    for p, a, b in zip(kept, r_w, r_l):
        c = per_cat.setdefault(p["category"], [0, 0])
        c[0] += int(a > b)
        c[1] += 1
    cat_share = {c: pair_share([h for h, p in zip(hits, kept) if p["category"] == c],
                               [p for p in kept if p["category"] == c]) for c in sorted(per_cat)}
    fresh_scores = score_replies(model, tok, [f["messages"] for f in fresh],
                                 [f["reply"] for f in fresh], template) if fresh else []
    rows = calibration_bins(r_w, r_l)
    return {"accuracy": k / n, "correct": k, "n": n, "n_dropped": len(val_pairs) - n,
            "accuracy_share": pair_share(hits, kept), "gold_share": pair_share(gold_ok, kept),
            "per_category_share": cat_share,
            "gold_accuracy": gold_k / n, "gold_correct": gold_k,
            "ceiling": prefs.ceiling_accuracy(deltas, temperature),
            "length": length_baseline(train_pairs, kept),
            "per_category": {c: tuple(v) for c, v in sorted(per_cat.items())},
            "spearman": spearman(fresh_scores, [f["gold"] for f in fresh]) if fresh else float("nan"),
            "n_fresh": len(fresh), "calibration": rows, "ece": expected_calibration_error(rows),
            "r_chosen": r_w, "r_rejected": r_l, "pairs": kept, "fresh_scores": fresh_scores}


def build_reward_model(folder, variant: str, init: str, steps: int, rc, train_cfg, model_cfg,
                       template: str, tok, prefs: dict, lm: GPT | None, device=None,
                       progress: bool = True) -> dict:
    """The recipe of a reward model (notebook 05, sections 4-5): a :class:`ScalarModel` whose
    body starts from ``lm`` (SFT or base weights; None = random init), trained for ``steps``
    on ``prefs["train"]`` with the Bradley-Terry loss through the shared loop; saves
    ``model.pt`` in ``folder`` and returns its curve, wall time and held-out accuracy.

    ``rc`` is the :class:`~llmlab.config.RewardConfig`, ``train_cfg`` pretraining's
    :class:`~llmlab.config.TrainConfig` (turned into the RM's by :func:`reward_train_config`).
    """
    import time

    from .device import seed_everything
    from .train import save_checkpoint

    train_enc, _ = encode_pairs(prefs["train"], tok, template, model_cfg.block_size)
    val_enc, _ = encode_pairs(prefs["val"], tok, template, model_cfg.block_size)
    seed_everything(rc.seed)
    model = reward_model_from(lm, model_cfg, rc.likelihood_weight)
    cfg = reward_train_config(rc, train_cfg, steps)
    t0 = time.perf_counter()
    res = train_reward_model(model, train_enc, val_enc, cfg, tok.pad_id, device, progress=progress)
    seconds = time.perf_counter() - t0
    r_w, r_l = score_pairs(model, val_enc, tok.pad_id)
    k, n = pair_accuracy(r_w, r_l)
    save_checkpoint(folder / "model.pt", model.cpu())
    return {"variant": variant, "init": init, "steps": steps, "batch_size": rc.batch_size,
            "n_train": len(train_enc), "n_val": len(val_enc), "train_seconds": round(seconds, 2),
            "val_accuracy": k / n, "val_correct": k,
            "likelihood_weight": (round(model.likelihood_weight.item(), 4)
                                  if reads_likelihood(model) else None),
            "curve": [[s, m.get("accuracy"), m.get("margin")] for s, m in res.val_metrics],
            "val_losses": [[s, round(x, 4)] for s, x in res.val_losses],
            "train_losses": [round(x, 4) for x in res.train_losses]}
