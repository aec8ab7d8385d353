"""RLHF with PPO: a policy optimised against the reward model, scored by the gold judge (notebook 06).

PPO for language models holds **four models** (InstructGPT, Ouyang et al. 2022; Ziegler et al.
2019): the **policy** (the SFT model, trained), the frozen **reference** (the SFT model, for the
KL penalty), the frozen **reward model** (notebook 05) and the **value model** (the critic,
initialised from the reward model, trained). One iteration (:func:`ppo_iteration`) is

1. **generate**: sample one reply per prompt from the policy at temperature 1 with the KV cache
   (:func:`sample_with_logprobs`, :func:`rollout`), prompts from the world's training split;
2. **score**: the reward model read at the reply's last token; the gold judge's score is
   logged beside it and never trained on;
3. **KL penalty**: per token ``kl_t = log pi(y_t) - log pi_ref(y_t)`` (:func:`per_token_kl`),
   and the per-token reward ``r_t = -beta kl_t``, plus the RM score at the last reply token
   (:func:`penalised_rewards`). Summed over a reply this is the seed's objective
   ``E[R] - beta KL``: the sum of ``kl_t`` over tokens sampled from pi is an unbiased
   estimate of ``KL(pi || pi_ref)`` of the whole reply;
4. **advantages** by GAE (:func:`gae`, Schulman et al. 2016, Eq. 16) and whitening
   (:func:`whiten`);
5. **update**: a few epochs of minibatches of the clipped surrogate (:func:`ppo_clip_loss`,
   Schulman et al. 2017, Eq. 7) and the clipped value loss (:func:`value_loss`), each step
   through :func:`llmlab.train.train_step`, the shared loop's optimiser step.

The KL coefficient is fixed (:class:`FixedKL`) or adapted towards a target KL
(:class:`AdaptiveKL`, Ziegler et al. 2019, Sec. 2.2). :func:`evaluate_policy` measures a policy
on held-out prompts (gold and proxy reward, KL to the reference, behaviour shares with Wilson
intervals) -- notebook 07 (DPO) uses the same function -- and :func:`best_of_n` is the non-RL
baseline (sample N, keep the RM's favourite; its KL is ``log N - (N-1)/N``). The recipe of the
cached runs is :func:`build_ppo`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import chat, evaluate, prefs, reward, sft
from .evaluate import fmt_share, share, share_difference  # noqa: F401  (notebooks 06-09 call ppo.share)
from .model import GPT, ScalarModel

# the knobs a PPO run is tuned by (notebooks 07 and 08 count them against DPO's and the others');
# the other PPOConfig fields set what is measured (held-out prompts, replies per prompt, when to
# evaluate, the prompts followed) or which extra runs the notebook makes, not the run itself
HYPERPARAMETERS = ("iterations", "batch_size", "minibatch_size", "epochs", "lr", "grad_clip", "clip",
                   "clip_value", "vf_coef", "gamma", "lam", "whiten", "kl", "beta", "target_kl",
                   "horizon", "max_new_tokens", "no_stop_penalty")
NOT_HYPERPARAMETERS = ("n_prompts", "n_eval", "n_eval_declines", "eval_samples", "eval_every", "n_track", "track_samples",
                       "track_every", "beta0_iterations", "beta0_eval_every", "small_beta", "fast_beta",
                       "fast_horizon", "stability_iterations",
                       "best_of_n", "seed", "train_seed")

# ============================================================================================
# 1. The math, as small pure functions
# ============================================================================================


def token_logprobs(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Log-probability of each next token: ``log p(idx[:, t+1] | idx[:, :t+1])``.

    logits (B, T, V) of the sequence ``idx`` (B, T) -> (B, T - 1); entry t scores token t + 1
    (the *action* taken after state t). Unlike :func:`llmlab.model.sequence_logprobs` nothing is
    summed: PPO needs every token's own log-probability.

    >>> lp = token_logprobs(torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]]))   # uniform over 4
    >>> [round(x, 4) for x in lp[0].tolist()]
    [-1.3863, -1.3863]
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)                   # (B, T-1, V)
    return logp.gather(-1, idx[:, 1:].unsqueeze(-1)).squeeze(-1)               # (B, T-1)


def per_token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The KL estimate of each sampled token, ``log pi(y_t) - log pi_ref(y_t)`` (the "k1"
    estimator), zero off the reply. (B, T), (B, T), (B, T) -> (B, T).

    Its sum over a reply sampled from pi is an unbiased estimate of ``KL(pi || pi_ref)`` of the
    reply; it is exactly zero when the policy is the reference.

    >>> per_token_kl(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]]), torch.ones(1, 2))
    tensor([[0.5000, 0.0000]])
    """
    return (logprobs - ref_logprobs) * mask


def first_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first 1 in each row of a 0/1 mask (B, T) -> (B,) (the reply's first token).

    >>> first_index(torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]]))
    tensor([1, 0])
    """
    T = mask.size(1)
    pos = torch.arange(T, device=mask.device).expand_as(mask)                  # (B, T)
    return torch.where(mask > 0, pos, torch.full_like(pos, T)).min(dim=1).values


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a 0/1 mask (B, T) -> (B,) (the reply's last token).

    >>> last_index(torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]]))
    tensor([2, 0])
    """
    T = mask.size(1)
    pos = torch.arange(T, device=mask.device).expand_as(mask)                  # (B, T)
    return torch.where(mask > 0, pos, torch.full_like(pos, -1)).max(dim=1).values


def penalised_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                      beta: float) -> torch.Tensor:
    """Per-token rewards of InstructGPT's objective: ``r_t = -beta kl_t`` on every reply token,
    plus the reward model's score on the last one. scores (B,), kl (B, T), mask (B, T) -> (B, T).

    Summed over a reply: ``R(x, y) - beta * sum_t kl_t``, the seed's ``E[R] - beta KL``.

    >>> penalised_rewards(torch.tensor([2.0]), torch.tensor([[0.0, 0.5, 1.0, 0.0]]),
    ...                   torch.tensor([[0.0, 1.0, 1.0, 0.0]]), beta=0.1)
    tensor([[ 0.0000, -0.0500,  1.9000,  0.0000]])
    """
    rewards = torch.zeros_like(kl) - beta * kl * mask                         # (B, T)
    last = last_index(mask)                                                    # (B,)
    return rewards.scatter_add(1, last.view(-1, 1), scores.view(-1, 1).to(rewards.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16), one reply per row.

    ``delta_t = r_t + gamma V_{t+1} - V_t`` and ``A_t = delta_t + gamma lam A_{t+1}``, with
    ``V`` and ``A`` zero after the reply's last token (the episode ends there). rewards, values,
    mask (B, T) -> ``(advantages, returns)``, each (B, T), zero off the mask; returns are
    ``A + V``, the value model's targets.

    >>> a, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 1.0, 1.0)
    >>> a.tolist(), ret.tolist()         # A_1 = 1 - 0.5; A_0 = (0 + 0.5 - 0.5) + A_1
    ([[0.5, 0.5]], [[1.0, 1.0]])
    """
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)                                            # (B, T)
    next_adv = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)      # (B,)
    next_value = torch.zeros_like(next_adv)                                    # (B,)
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]              # (B,)
        a = (delta + gamma * lam * next_adv) * m
        adv[:, t] = a
        # off the reply, carry nothing backwards into the prompt
        next_adv = torch.where(m > 0, a, torch.zeros_like(a))
        next_value = torch.where(m > 0, values[:, t], torch.zeros_like(a))
    return adv, (adv + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Advantages normalised to mean 0 and standard deviation 1 over the reply tokens of the
    batch (zero off the mask). Keeps the policy step's size independent of the reward's scale.

    >>> whiten(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[1.0, 1.0, 0.0]])).tolist()
    [[-1.0, 1.0, 0.0]]
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def whiten_across(x: torch.Tensor, mask: torch.Tensor, d, eps: float = 1e-8) -> torch.Tensor:
    """:func:`whiten` over the reply tokens of every process's shard of the rollout (under
    ``torchrun``; ``d`` is :class:`llmlab.train.Dist`): the mean and variance are those of the
    whole batch, as one process would compute them, from all-reduced sums. One process: whiten."""
    if not d.enabled:
        return whiten(x, mask, eps)
    import torch.distributed as dist

    sums = torch.stack([(x * mask).sum(), mask.sum()]).double()                  # (2,)
    dist.all_reduce(sums)
    mean = (sums[0] / sums[1].clamp(min=1)).to(x.dtype)
    sq = ((x - mean) ** 2 * mask).sum().double()
    dist.all_reduce(sq)
    var = (sq / sums[1].clamp(min=1)).to(x.dtype)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def ppo_clip_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate objective (Schulman et al. 2017, Eq. 7), as a loss to minimise:

    ``-mean_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)`` with ``rho_t = pi / pi_old``.

    Once the ratio has moved past the clip range in the direction the advantage favours, the
    clipped term is the smaller one and is constant: that token's gradient is zero, so one
    rollout cannot push the policy far. All (B, T); returns ``(loss, metrics)`` with the share
    of clipped tokens and the approximate KL to the rollout policy.

    >>> a = torch.tensor([[1.0]]); m = torch.ones(1, 1); old = torch.zeros(1, 1)
    >>> round(ppo_clip_loss(torch.tensor([[0.5]]), old, a, m)[0].item(), 4)   # rho = e^0.5, capped at 1.2
    -1.2
    """
    ratio = torch.exp(logprobs - old_logprobs)                                 # (B, T)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    loss = -masked_mean(torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip).float(), mask).item()
        approx_kl = masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask).item()
    return loss, {"clipfrac": clipfrac, "approx_kl": approx_kl}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, clip: float | None = 0.2) -> torch.Tensor:
    """The value model's loss: ``0.5 mean_t max((V - G)^2, (V_clipped - G)^2)`` with
    ``V_clipped = V_old + clip(V - V_old, -eps, eps)`` (the clipped value loss of OpenAI's PPO
    code); ``clip=None`` or 0 is the plain squared error. All (B, T) -> ().

    >>> value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]]), torch.ones(1, 1)).item()
    0.5
    """
    err = (values - returns) ** 2
    if clip:
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        err = torch.max(err, (v_clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


# --------------------------------------------------------------------------------------------
# KL control
# --------------------------------------------------------------------------------------------


class FixedKL:
    """A constant KL coefficient beta."""

    def __init__(self, beta: float):
        self.beta = beta

    def update(self, kl: float, n_episodes: int) -> float:
        return self.beta


class AdaptiveKL:
    """The adaptive KL controller of Ziegler et al. 2019 (Sec. 2.2): move beta towards the value
    that keeps the measured KL at ``target``,

    ``e = clip(KL / target - 1, -0.2, 0.2)``, ``beta <- beta (1 + e * n / horizon)``

    after a rollout of ``n`` episodes. KL above the target raises beta, below it lowers beta.

    >>> c = AdaptiveKL(0.1, target=1.0, horizon=100)
    >>> round(c.update(kl=3.0, n_episodes=50), 4), round(c.update(kl=0.0, n_episodes=50), 4)
    (0.11, 0.099)
    """

    def __init__(self, beta: float, target: float, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_episodes: int) -> float:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_episodes / self.horizon
        return self.beta


def kl_controller(c) -> FixedKL | AdaptiveKL:
    """The controller a :class:`~llmlab.config.PPOConfig` asks for (``kl = "fixed"`` or ``"adaptive"``)."""
    if c.kl == "fixed":
        return FixedKL(c.beta)
    if c.kl == "adaptive":
        return AdaptiveKL(c.beta, c.target_kl, c.horizon)
    raise ValueError(f"PPOConfig.kl must be 'fixed' or 'adaptive', got {c.kl!r}")


def best_of_n_kl(n: int) -> float:
    """KL of best-of-n sampling to the sampling policy, ``log n - (n - 1) / n`` (Stiennon et al.
    2020, appendix; an upper bound, tight for continuous rewards).

    >>> best_of_n_kl(1), round(best_of_n_kl(4), 4)
    (0.0, 0.6363)
    """
    return math.log(n) - (n - 1) / n


# ============================================================================================
# 2. The four models
# ============================================================================================


class ActorCritic(nn.Module):
    """The two trained models of PPO in one module, so one optimiser and one call of
    :func:`llmlab.train.train_step` update both: the **policy** (a GPT) and the **value model**
    (a :class:`~llmlab.model.ScalarModel` of kind ``value``).

    ``forward(idx)`` (B, T) -> ``(logprobs (B, T-1), values (B, T-1))``: the policy's
    log-probability of each next token and the value of the state before it.
    """

    def __init__(self, policy: GPT, value: ScalarModel):
        super().__init__()
        self.policy, self.value = policy, value
        self.config = policy.config

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _ = self.policy(idx)                                           # (B, T, V)
        return token_logprobs(logits, idx), self.value(idx)[:, :-1]            # (B, T-1) each

    def flops_per_token(self, seq_len: int | None = None) -> float:
        return self.policy.flops_per_token(seq_len) + self.value.flops_per_token(seq_len)


def value_model_from(rm: ScalarModel) -> ScalarModel:
    """The critic, initialised from the reward model (InstructGPT, Sec. 3.5): a copy of its body
    and head, read at every position instead of the last (a
    :class:`~llmlab.reward.LikelihoodRewardModel`'s likelihood weight is not copied: a value
    is the head's alone)."""
    v = ScalarModel(copy.deepcopy(rm.body), kind="value")
    v.head = copy.deepcopy(rm.head)
    return v


def model_memory(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Bytes a model holds: ``params``, ``grads`` (when trained: one per parameter, same dtype)
    and ``optimizer`` (the state tensors the optimiser allocated, e.g. Adam's two moments).

    Measured from the tensors themselves; the tied head of a GPT counts once.
    """
    params = {id(p): p for p in model.parameters()}
    p_bytes = sum(p.numel() * p.element_size() for p in params.values())
    g_bytes = sum(p.numel() * p.element_size() for p in params.values() if p.requires_grad)
    o_bytes = 0
    if optimizer is not None:
        for pid, st in optimizer.state.items():
            if id(pid) in params:
                o_bytes += sum(t.numel() * t.element_size() for t in st.values() if torch.is_tensor(t))
    else:
        g_bytes = 0
    return {"params": sum(p.numel() for p in params.values()), "param_bytes": p_bytes,
            "grad_bytes": g_bytes, "optimizer_bytes": o_bytes,
            "total_bytes": p_bytes + g_bytes + o_bytes}


def memory_7b(n_params: float = 7e9, weight_bytes: int = 2, grad_bytes: int = 2,
              master_bytes: int = 4, adam_bytes: int = 8) -> list[dict]:
    """The same four models at ``n_params`` each in bf16 with Adam (mixed precision: bf16 weights
    and gradients, an fp32 master copy and Adam's two fp32 moments for the trained ones).

    >>> [round(r["GB"]) for r in memory_7b()]
    [112, 14, 14, 112]
    """
    trained = weight_bytes + grad_bytes + master_bytes + adam_bytes
    rows = []
    for name, per in (("policy (trained)", trained), ("reference (frozen)", weight_bytes),
                      ("reward model (frozen)", weight_bytes), ("value model (trained)", trained)):
        rows.append({"model": name, "bytes_per_param": per, "GB": n_params * per / 1e9})
    return rows


# ============================================================================================
# 3. Rollouts with the KV cache
# ============================================================================================


@torch.no_grad()
def sample_with_logprobs(model: GPT, idx: torch.Tensor, max_new_tokens: int, stop_id: int,
                         temperature: float = 1.0, generator: torch.Generator | None = None,
                         use_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample replies to prompts of equal length and record each token's log-probability.

    idx (B, T) -> ``(tokens (B, n), logprobs (B, n), lengths (B,))``: ``lengths`` counts each
    row's reply tokens up to and including its first ``stop_id`` (all ``n`` if it never
    stopped); after that the row repeats ``stop_id``. Like :func:`llmlab.generate.generate`
    the prompt is prefilled once and each new token is one position of work against the KV
    cache; ``use_cache=False`` recomputes the whole sequence at every step (to time the
    difference). The log-probabilities are of the temperature-scaled distribution the tokens
    were drawn from; ``tests/test_ppo.py`` checks they equal a full forward pass's.
    """
    was = model.training
    model.eval()
    B, T = idx.shape
    n_new = min(max_new_tokens, model.config.block_size - T)
    cache = model.new_cache() if use_cache else None
    seq, tokens, logps = idx, [], []
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)                 # (B,)
    lengths = torch.zeros(B, dtype=torch.long, device=idx.device)              # (B,)
    for step in range(n_new):
        if use_cache:
            logits, _ = model(seq if step == 0 else seq[:, -1:], cache=cache)  # (B, T or 1, V)
        else:
            logits, _ = model(seq)                                             # (B, T + step, V)
        logp = torch.log_softmax(logits[:, -1].float() / temperature, dim=-1)  # (B, V)
        nxt = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, stop_id), nxt)
        tokens.append(nxt)
        logps.append(logp.gather(1, nxt.view(-1, 1)).squeeze(1))
        lengths += (~done).long()
        done = done | (nxt == stop_id)
        seq = torch.cat([seq, nxt.view(-1, 1)], dim=1)                         # (B, T + step + 1)
        if bool(done.all()):
            break
    model.train(was)
    if not tokens:
        empty = idx.new_zeros(B, 0)
        return empty, empty.float(), lengths
    return torch.stack(tokens, 1), torch.stack(logps, 1), lengths


@dataclass
class Rollout:
    """A batch of episodes (prompt + one sampled reply each), right-padded to one tensor.

    Per-token arrays have T - 1 columns: column t is the action "token t + 1" taken in the
    state "tokens 0..t"; ``mask`` is 1 on the columns whose token is part of the reply (its
    stop token included).
    """

    idx: torch.Tensor              # (B, T) prompt + reply tokens, right-padded with pad_id
    mask: torch.Tensor             # (B, T-1) 1.0 where the action is a reply token
    stopped: torch.Tensor          # (B,) the reply ended with the template's stop token
    texts: list                    # decoded replies (without the stop token)
    items: list                    # the prompt items (for the gold judge)
    scores: torch.Tensor | None = None      # (B,) reward-model score (with the missing-stop penalty)
    gold: list = field(default_factory=list)  # gold judge score per reply (logged, never trained on)
    logprobs: torch.Tensor | None = None    # (B, T-1) log pi_old(action)
    ref_logprobs: torch.Tensor | None = None  # (B, T-1) log pi_ref(action)
    values: torch.Tensor | None = None      # (B, T-1) V_old(state)

    @property
    def first(self) -> torch.Tensor:
        """(B,) sequence index of each reply's first token (where log p(reply) starts)."""
        return first_index(self.mask) + 1

    @property
    def last(self) -> torch.Tensor:
        """(B,) sequence index of each reply's last token (where the reward model reads)."""
        return last_index(self.mask) + 1

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) reply length in tokens (stop token included)."""
        return self.mask.sum(1)


def prompt_ids(items: list[dict], tok, template: str) -> list[list[int]]:
    """Each item's conversation rendered and tokenised up to the assistant's turn."""
    return [chat.tokenize_chat(it["messages"], tok, template, add_generation_prompt=True)[0]
            for it in items]


@torch.no_grad()
def rollout(policy: GPT, tok, items: list[dict], template: str, max_new_tokens: int,
            generator: torch.Generator | None = None, use_cache: bool = True,
            temperature: float = 1.0) -> Rollout:
    """Step 1 of the cycle: one sampled reply per prompt item, as a right-padded :class:`Rollout`.

    Prompts of equal length share a batch and a KV cache (no left padding, which the learned
    position table never saw); the episodes come back in the order of ``items``.
    """
    device = next(policy.parameters()).device
    stop_id = tok.special_tokens[chat.STOP_TOKENS[template]]
    prompts = prompt_ids(items, tok, template)
    by_len: dict = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    seqs: list = [None] * len(items)
    n_reply = [0] * len(items)
    stopped = [False] * len(items)
    for T, group in sorted(by_len.items()):
        idx = torch.tensor([prompts[i] for i in group], device=device)         # (b, T)
        toks, _, lengths = sample_with_logprobs(policy, idx, max_new_tokens, stop_id, temperature,
                                                generator, use_cache)
        for j, i in enumerate(group):
            n = int(lengths[j])
            reply = toks[j, :n].tolist()
            seqs[i] = prompts[i] + reply
            n_reply[i] = n
            stopped[i] = n > 0 and reply[-1] == stop_id
    T_max = max(len(s) for s in seqs)
    idx = torch.full((len(items), T_max), tok.pad_id, dtype=torch.long)         # (B, T)
    mask = torch.zeros(len(items), T_max - 1)                                   # (B, T-1)
    for b, s in enumerate(seqs):
        idx[b, :len(s)] = torch.tensor(s)
        P = len(prompts[b])
        mask[b, P - 1:P - 1 + n_reply[b]] = 1.0
    texts = []
    for b, s in enumerate(seqs):
        body = s[len(prompts[b]):len(prompts[b]) + n_reply[b] - int(stopped[b])]
        texts.append(tok.decode([t for t in body if t != tok.eot_id]).strip())
    return Rollout(idx.to(device), mask.to(device), torch.tensor(stopped, device=device), texts,
                   list(items))


@torch.no_grad()
def score_rollout(ro: Rollout, rm: ScalarModel, values: dict, no_stop_penalty: float) -> Rollout:
    """Step 2: the reward model's score of each episode on the very tokens the policy sampled
    (its head read at the reply's last token, plus, for a
    :class:`~llmlab.reward.LikelihoodRewardModel`, its weighted log p of the reply's tokens),
    minus ``no_stop_penalty`` for a reply that never ended its turn (it hit the length limit);
    and the gold judge's score of the decoded reply, logged."""
    was = rm.training
    rm.eval()
    r = reward.rewards_at(rm, ro.idx, ro.last, ro.first)                       # (B,)
    rm.train(was)
    ro.scores = r - no_stop_penalty * (~ro.stopped).float()
    ro.gold = [prefs.gold_score(it, t, values).score for it, t in zip(ro.items, ro.texts)]
    return ro


@torch.no_grad()
def logprobs_of(model: GPT, idx: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """:func:`token_logprobs` of ``model`` over a batch, in chunks. (B, T) -> (B, T-1)."""
    was = model.training
    model.eval()
    out = torch.cat([token_logprobs(model(idx[s:s + batch_size])[0], idx[s:s + batch_size])
                     for s in range(0, idx.size(0), batch_size)])
    model.train(was)
    return out


# ============================================================================================
# 4. Measuring a policy on held-out prompts (notebooks 06 and 07)
# ============================================================================================


def mean_interval(xs: list[float], z: float = 1.96, clusters: list | None = None) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean with its normal-approximation 95% interval.

    ``clusters`` (one key per value) marks values that are not independent draws: the replies
    to one prompt, or to the same prompt text asked twice. The mean stays the plain mean; its
    variance is then the cluster-robust one (Liang and Zeger 1986, with the small-sample factor
    ``G / (G - 1)`` over ``G`` clusters), so repeats of a prompt narrow the interval only as much
    as a new prompt would if they disagree, and not at all if they agree. With every value its
    own cluster this is the usual ``s / sqrt(n)``; with ``G`` clusters of equal size it is the
    usual interval of the ``G`` cluster means.

    >>> [round(v, 3) for v in mean_interval([1.0, 2.0, 3.0, 4.0])]
    [2.5, 1.235, 3.765]
    >>> [round(v, 3) for v in mean_interval([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0], clusters=[0, 0, 1, 1, 2, 2, 3, 3])]
    [2.5, 1.235, 3.765]
    """
    n = len(xs)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    m = sum(xs) / n
    if clusters is None:
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
        half = z * sd / math.sqrt(n)
    else:
        if len(clusters) != n:
            raise ValueError(f"mean_interval: {n} values but {len(clusters)} cluster keys")
        sums: dict = {}
        for x, k in zip(xs, clusters):
            sums[k] = sums.get(k, 0.0) + (x - m)
        g = len(sums)
        var = g / (g - 1) * sum(v * v for v in sums.values()) / n ** 2 if g > 1 else 0.0
        half = z * math.sqrt(var)
    return m, m - half, m + half


def prompt_key(item_or_record: dict) -> str:
    """What makes two evaluated replies answers to the *same* prompt: the prompt's text (a
    prompt item's messages, or the ``prompt`` of an :func:`evaluate_policy` reply record). The
    held-out sets draw prompts with replacement from pools not much larger than the number
    drawn (one held-out unknown entity can be asked about twice in the same words), so
    intervals count distinct prompts, not draws.

    >>> prompt_key({"messages": [{"role": "user", "content": "Hi?"}]}) == prompt_key({"prompt": "Hi?"})
    True
    """
    if "messages" in item_or_record:
        return item_or_record["messages"][-1]["content"]
    return item_or_record["prompt"]


def behaviour(items: list[dict], texts: list[str], stopped: list[bool], values: dict,
              prompt_ids: list[int] | None = None) -> dict:
    """The behaviour shares of replies to prompt items, with n and Wilson intervals, each the
    share of one kind of prompt whose reply lands on one row of the gold judge's table (so a
    share and the gold reward count the same replies): ``idk`` ("I don't know" about the
    unknown entity asked), ``refusal`` (a refusal opening the reply to a decline request),
    ``factual`` (the right answer to fact questions), ``premise_corrected`` (the true value
    stated against a false premise) and ``stopped`` (the reply ended its turn); plus ``length``
    (mean reply length in characters). ``prompt_ids`` (the prompt of each reply, when there are
    several per prompt: an index or :func:`prompt_key`) makes each interval count prompts, not
    replies (:func:`share`)."""
    ids = list(range(len(items))) if prompt_ids is None else prompt_ids

    def tally(hits):                          # [(prompt id, hit)] -> share counted by prompt
        groups: dict = {}
        for i, h in hits:
            g = groups.setdefault(i, [0, 0])
            g[0] += bool(h)
            g[1] += 1
        return share(sum(g[0] for g in groups.values()), len(hits), [tuple(g) for g in groups.values()])

    def count(kind, case):
        return tally([(i, prefs.gold_score(it, t, values).case == case)
                      for i, it, t in zip(ids, items, texts) if it["kind"] == kind])

    return {**{name: count(kind, case) for name, (kind, case) in SHARE_CASES.items()},
            "stopped": tally(list(zip(ids, stopped))),
            "length": sum(len(t) for t in texts) / max(len(texts), 1)}


# each behaviour share: (the kind of prompt it counts, the row of the gold judge's table it counts)
SHARE_CASES = {"idk": ("unknown", "says it does not know"), "refusal": ("decline", "refuses"),
               "factual": ("fact", "states the right answer"),
               "premise_corrected": ("premise", "corrects the false premise")}
SHARES = tuple(SHARE_CASES)


@torch.no_grad()
def evaluate_policy(policy: GPT, ref: GPT, rm: ScalarModel, tok, items: list[dict], values: dict,
                    template: str = "chatml", max_new_tokens: int = 40, n_samples: int = 1,
                    seed: int = 0, no_stop_penalty: float = 1.0, batch_size: int = 256,
                    keep_replies: bool = True) -> dict:
    """A policy measured on held-out prompt items (notebook 06, section 4; notebook 07 too).

    Samples ``n_samples`` replies per item at temperature 1 (the distribution PPO optimises and
    the KL is defined on) with a fixed seed, then reports over all of them:

    - ``gold``: mean gold-judge reward with its 95% interval (``gold_ci``), and ``golds``, each
      reply's, in the order of ``items`` (two evaluations of one run pair reply by reply:
      :func:`drop_from_peak`);
    - ``proxy``: mean reward-model score (minus ``no_stop_penalty`` for a reply that never
      stopped, as in training) with ``proxy_ci``;
    - ``kl``: mean ``sum_t log pi - log pi_ref`` per reply (nats), with ``kl_ci``;
    - ``shares``: :func:`behaviour` (idk, refusal, factual, premise_corrected, stopped: each
      ``{"rate", "k", "n", "ci"}``) and ``length`` (mean characters per reply);
    - ``replies`` (with ``keep_replies``): per reply its item, text, gold, proxy and kl, the
      ``n_samples`` replies of one prompt next to each other (``item``: the prompt's index).

    The distinct prompts, not the replies, are the independent draws: the replies to one
    prompt text (its ``n_samples`` samples, and those of every item that repeats its text) are
    one cluster of :func:`mean_interval` (the replies average out the sampling noise of one
    prompt; only more distinct prompts narrow the spread between prompts), and the shares'
    intervals use their effective sample size over the same clusters (:func:`share`).
    ``n_prompts`` counts the items asked, ``distinct_prompts`` their distinct texts.
    """
    device = next(policy.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    rows = [it for it in items for _ in range(n_samples)]
    ids = [i for i in range(len(items)) for _ in range(n_samples)]
    texts, stopped, gold, proxy, kl = [], [], [], [], []
    for s in range(0, len(rows), batch_size):
        ro = rollout(policy, tok, rows[s:s + batch_size], template, max_new_tokens, gen)
        score_rollout(ro, rm, values, no_stop_penalty)
        lp, ref_lp = logprobs_of(policy, ro.idx), logprobs_of(ref, ro.idx)
        kl += per_token_kl(lp, ref_lp, ro.mask).sum(1).tolist()
        texts += ro.texts
        stopped += ro.stopped.tolist()
        gold += ro.gold
        proxy += ro.scores.tolist()

    keys = [prompt_key(it) for it in rows]     # the replies to one prompt text are one cluster
    g, p, k = (mean_interval(xs, clusters=keys) for xs in (gold, proxy, kl))
    b = behaviour(rows, texts, stopped, values, keys)
    out = {"n": len(rows), "n_prompts": len(items), "distinct_prompts": len(set(keys)), "n_samples": n_samples,
           "gold": g[0], "gold_ci": list(g[1:]), "golds": gold,
           "proxy": p[0], "proxy_ci": list(p[1:]), "kl": k[0], "kl_ci": list(k[1:]),
           "shares": {name: b[name] for name in SHARES + ("stopped",)}, "length": b["length"]}
    if keep_replies:
        out["replies"] = [{"item": i, "prompt": it["messages"][-1]["content"], "kind": it["kind"], "text": t,
                           "case": prefs.gold_score(it, t, values).case, "gold": gv, "proxy": pv, "kl": kv}
                          for i, it, t, gv, pv, kv in zip(ids, rows, texts, gold, proxy, kl)]
    return out


def paired_difference(a: dict, b: dict) -> tuple[float, float, float, int]:
    """Mean gold difference of two policies measured on the same prompts in the same order
    (two :func:`evaluate_policy` results with replies), prompt by prompt, with its 95% interval:
    ``(mean, low, high, n distinct prompts)`` (:func:`mean_interval` of the reply
    differences, clustered by prompt text: the replies to one prompt, and to a prompt text asked
    more than once, are one draw).

    Which prompt was asked explains much of a reply's gold score (a decline request and an
    unknown entity score on different rows of the judge's table); pairing the two replies to the
    same prompt takes that part out, so the interval is narrower than the two separate ones.

    >>> r = lambda *g: {"replies": [{"prompt": str(i), "gold": x} for i, x in enumerate(g)]}
    >>> [round(x, 3) for x in paired_difference(r(2.0, -1.0, 0.0), r(1.0, -2.0, -1.0))[:3]]
    [1.0, 1.0, 1.0]
    """
    keys = [prompt_key(x) for x in b["replies"]]
    m, lo, hi = mean_interval(paired_replies(a, b), clusters=keys)
    return m, lo, hi, len(set(keys))


def paired_replies(a: dict, b: dict) -> list[float]:
    """Gold of ``a``'s replies minus ``b``'s, reply by reply, for two evaluations of the same
    prompts in the same order (a clear error otherwise)."""
    return [x["gold"] - y["gold"] for x, y in same_prompts(a, b, "paired_difference")]


def same_prompts(a: dict, b: dict, who: str) -> list[tuple[dict, dict]]:
    """The reply records of two evaluations side by side, ``[(a's, b's)]``; a clear error
    naming ``who`` unless both asked the same prompts in the same order."""
    ra, rb = a["replies"], b["replies"]
    key = lambda r: (r.get("item"), r["prompt"])
    if len(ra) != len(rb) or any(key(x) != key(y) for x, y in zip(ra, rb)):
        raise ValueError(f"{who} needs two evaluations of the same prompts in the same order")
    return list(zip(ra, rb))


def paired_share_difference(a: dict, b: dict, name: str) -> tuple[float, float, float, int]:
    """Change of one behaviour share (:data:`SHARE_CASES`) from ``b`` to ``a``, two
    :func:`evaluate_policy` results (with replies) of the same prompts in the same order: over
    the replies to prompts of that kind, ``a``'s hit minus ``b``'s (1, 0 or -1), reply by reply,
    with :func:`mean_interval` clustered by prompt text, ``(change, low, high, n distinct
    prompts)``. Both policies answer the same prompts, so which prompt was asked (a request SFT
    always refuses, another it never does) cancels, as in :func:`paired_difference`; the
    interval is narrower than the two shares' own intervals.

    >>> r = lambda *c: {"replies": [{"prompt": str(i), "item": i, "kind": "decline", "case": x}
    ...                             for i, x in enumerate(c)]}
    >>> [round(x, 3) for x in paired_share_difference(r("refuses", "refuses"), r("complies", "refuses"), "refusal")[:3]]
    [0.5, -0.48, 1.48]
    """
    kind, case = SHARE_CASES[name]
    pairs = [(x, y) for x, y in same_prompts(a, b, "paired_share_difference") if y["kind"] == kind]
    keys = [prompt_key(y) for _, y in pairs]
    m, lo, hi = mean_interval([(x["case"] == case) - (y["case"] == case) for x, y in pairs], clusters=keys)
    return m, lo, hi, len(set(keys))


def pooled_difference(runs: list[dict], b: dict) -> tuple[float, float, float, int]:
    """Several runs of one configuration (other training seeds) against ``b`` on the same
    prompts: each reply's gold difference averaged over the runs, then :func:`paired_difference`'s
    mean and interval clustered by prompt, ``(mean, low, high, n distinct prompts)``.

    The interval counts prompts, not seeds: it says whether these runs' average is above ``b``
    on prompts like these; a run with yet another seed can still land elsewhere (compare the
    runs' own paired intervals).

    >>> r = lambda *g: {"replies": [{"prompt": str(i), "gold": x} for i, x in enumerate(g)]}
    >>> [round(x, 3) for x in pooled_difference([r(2.0, 0.0), r(0.0, 2.0)], r(0.0, 0.0))[:3]]
    [1.0, 1.0, 1.0]
    """
    diffs = [paired_replies(a, b) for a in runs]
    keys = [prompt_key(x) for x in b["replies"]]
    per_reply = [sum(d[i] for d in diffs) / len(diffs) for i in range(len(keys))]
    m, lo, hi = mean_interval(per_reply, clusters=keys)
    return m, lo, hi, len(set(keys))


def kl_by_kind(evaluation: dict) -> dict:
    """Where a policy moved away from the reference: the mean KL per reply for each kind of
    prompt of an :func:`evaluate_policy` result (with replies), ``{kind: (mean, low, high,
    distinct prompts)}``, the interval clustered by prompt text (:func:`mean_interval`).

    The adaptive controller steers the KL of the training rollouts as a whole; this says which
    prompts carry it, and, for held-out prompts next to training ones, whether the policy moved
    more on prompts its SFT data never showed it.

    >>> r = lambda k, p, kl: {"kind": k, "prompt": p, "kl": kl}
    >>> [round(x, 3) for x in kl_by_kind({"replies": [r("fact", "a", 1.0), r("fact", "b", 3.0), r("decline", "c", 0.5)]})["fact"]]
    [2.0, 0.04, 3.96, 2]
    """
    groups: dict = {}
    for rep in evaluation["replies"]:
        g = groups.setdefault(rep["kind"], ([], []))
        g[0].append(rep["kl"])
        g[1].append(prompt_key(rep))
    return {kind: (*mean_interval(kls, clusters=keys), len(set(keys))) for kind, (kls, keys) in groups.items()}


def drop_from_peak(evals: list[dict], items: list[dict], n_samples: int, seed: int = 0) -> dict:
    """Did a run's held-out gold reward fall after its peak (notebook 06, section 5)? The
    distinct held-out prompt texts are split at random into two halves: the peak is the earlier
    evaluation with the highest mean gold on half A, and the last evaluation is compared with it
    on half B, reply by reply (the same prompts in the same order, :func:`evaluate_policy`'s
    ``golds``), with the interval clustered by prompt (:func:`mean_interval`).

    Picking the peak and measuring the drop on the same prompts would favour finding a drop:
    the highest of several noisy means is high partly by chance (the winner's curse), and that
    part does not repeat. On half B it does not help the peak. Returns ``peak_iteration``, the
    peak's mean gold on each half (``peak_gold_a``, ``peak_gold_b``), ``final_gold_b``,
    ``change`` (final - peak on half B) with ``ci``, and ``n_prompts`` (distinct, half B).

    >>> items = [{"prompt": p} for p in "abcdefgh"]
    >>> ev = lambda it, *g: {"iteration": it, "golds": list(g)}
    >>> d = drop_from_peak([ev(0, *[0.0] * 8), ev(10, *[2.0] * 8), ev(20, *[1.0] * 8)], items, 1)
    >>> d["peak_iteration"], d["change"], d["n_prompts"]
    (10, -1.0, 4)
    """
    keys = [prompt_key(it) for it in items for _ in range(n_samples)]
    distinct = sorted(set(keys))
    random.Random(seed).shuffle(distinct)
    half_a = set(distinct[:len(distinct) // 2])
    in_a = [k in half_a for k in keys]
    for e in evals:
        if len(e["golds"]) != len(keys):
            raise ValueError(f"drop_from_peak: an evaluation has {len(e['golds'])} replies, expected "
                             f"{len(keys)} ({len(items)} prompts x {n_samples})")

    def mean_on(e, side):
        xs = [g for g, a in zip(e["golds"], in_a) if a == side]
        return sum(xs) / len(xs) if xs else float("nan")

    peak = max(evals[:-1] or evals, key=lambda e: mean_on(e, True))
    final = evals[-1]
    diffs = [f - p for f, p, a in zip(final["golds"], peak["golds"], in_a) if not a]
    keys_b = [k for k, a in zip(keys, in_a) if not a]
    m, lo, hi = mean_interval(diffs, clusters=keys_b)
    return {"peak_iteration": peak["iteration"], "final_iteration": final["iteration"],
            "peak_gold_a": mean_on(peak, True), "peak_gold_b": mean_on(peak, False),
            "final_gold_b": mean_on(final, False), "change": m, "ci": [lo, hi], "n_prompts": len(set(keys_b))}


@torch.no_grad()
def best_of_n(model: GPT, rm: ScalarModel, tok, items: list[dict], values: dict, ns=(1, 2, 4, 8, 16),
              template: str = "chatml", max_new_tokens: int = 40, seed: int = 0,
              no_stop_penalty: float = 1.0, batch_size: int = 256) -> list[dict]:
    """Best-of-n sampling, the non-RL baseline (notebook 06, section 5): sample ``max(ns)``
    replies per prompt from ``model`` once, and for each ``n`` keep the one of the first ``n``
    that the reward model scores highest. Returns per ``n``: mean gold and proxy reward of the
    kept replies (with intervals) and the KL of best-of-n to ``model``, :func:`best_of_n_kl`."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    N = max(ns)
    rows = [it for it in items for _ in range(N)]
    gold, proxy = [], []
    for s in range(0, len(rows), batch_size):
        ro = score_rollout(rollout(model, tok, rows[s:s + batch_size], template, max_new_tokens, gen),
                           rm, values, no_stop_penalty)
        gold += ro.gold
        proxy += ro.scores.tolist()
    out = []
    for n in ns:
        gk, pk = [], []
        for i in range(len(items)):
            cand = range(i * N, i * N + n)
            best = max(cand, key=lambda j: proxy[j])
            gk.append(gold[best])
            pk.append(proxy[best])
        keys = [prompt_key(it) for it in items]
        g, p = mean_interval(gk, clusters=keys), mean_interval(pk, clusters=keys)
        out.append({"n": n, "kl": best_of_n_kl(n), "gold": g[0], "gold_ci": list(g[1:]),
                    "proxy": p[0], "proxy_ci": list(p[1:])})
    return out


# ============================================================================================
# 5. The PPO iteration and the trainer
# ============================================================================================


def ppo_loss_fn(c) -> Callable:
    """The objective of step 5 as a ``loss_fn(model, batch) -> (loss, metrics)`` for
    :func:`llmlab.train.train_step`: the clipped surrogate plus ``vf_coef`` times the clipped
    value loss, over one minibatch of a rollout (``model`` is an :class:`ActorCritic`)."""
    def loss_fn(model, batch):
        logprobs, values = model(batch["idx"])                                 # (b, T-1) each
        m = batch["mask"]
        pg, stats = ppo_clip_loss(logprobs, batch["logprobs"], batch["advantages"], m, c.clip)
        vf = value_loss(values, batch["values"], batch["returns"], m, c.clip_value)
        return pg + c.vf_coef * vf, {"policy_loss": pg.item(), "value_loss": vf.item(), **stats}
    return loss_fn


def ppo_iteration(ac: ActorCritic, ref: GPT, rm: ScalarModel, tok, items: list[dict], values: dict,
                  c, beta: float, optimizer, scaler, precision, device, template: str = "chatml",
                  generator: torch.Generator | None = None, d=None,
                  run_model: nn.Module | None = None) -> tuple[Rollout, dict]:
    """One PPO iteration (notebook 06, section 2): the seed's cycle, step by step.

    Returns the rollout and the iteration's metrics: mean proxy and gold reward, KL to the
    reference per reply, reply length, and the update's losses.

    Under ``torchrun`` (``d``, a :class:`llmlab.train.Dist`, with ``world_size`` > 1) ``items``
    is this process's shard of the rollout and ``run_model`` the ``DistributedDataParallel``
    wrapper of ``ac``: each process samples and scores its shard, advantages are whitened over
    the whole batch, each optimiser step takes ``c.minibatch_size / world_size`` episodes per
    process with gradients averaged across processes, and the metrics are whole-batch means.
    """
    from .train import Dist, train_step

    d = d or Dist()
    run_model = run_model or ac

    # 1) generate: one reply per prompt, sampled at temperature 1 with the KV cache
    ro = rollout(ac.policy, tok, items, template, c.max_new_tokens, generator)
    # 2) score: the reward model on each reply (head + a log p, notebook 05); gold only logged
    score_rollout(ro, rm, values, c.no_stop_penalty)
    with torch.no_grad():
        was = ac.training
        ac.eval()
        ro.logprobs, ro.values = ac(ro.idx)                                    # (B, T-1) each
        ac.train(was)
        ro.ref_logprobs = logprobs_of(ref, ro.idx)                             # (B, T-1)
        # 3) KL penalty: per-token log pi - log pi_ref, into the per-token reward
        kl = per_token_kl(ro.logprobs, ro.ref_logprobs, ro.mask)               # (B, T-1)
        rewards = penalised_rewards(ro.scores, kl, ro.mask, beta)              # (B, T-1)
        # 4) advantages: GAE, then whitening over the batch's reply tokens
        adv, returns = gae(rewards, ro.values * ro.mask, ro.mask, c.gamma, c.lam)
        if c.whiten:
            adv = whiten_across(adv, ro.mask, d)
    # 5) update: a few epochs of shuffled minibatches, each one optimiser step of the shared loop
    data = {"idx": ro.idx, "mask": ro.mask, "logprobs": ro.logprobs, "values": ro.values,
            "advantages": adv, "returns": returns}
    loss_fn = ppo_loss_fn(c)
    B = ro.idx.size(0)
    minibatch = c.minibatch_size // d.world_size                               # per process
    stats: dict = {}
    n_steps = 0
    for _ in range(c.epochs):
        order = torch.randperm(B, generator=generator, device=generator.device if generator else "cpu")
        for s in range(0, B, minibatch):
            sel = order[s:s + minibatch].to(ro.idx.device)
            mb = {k: v[sel] for k, v in data.items()}
            T = int(mb["mask"].sum(0).nonzero().max()) + 2                     # crop right padding
            mb = {k: v[:, :T] if k == "idx" else v[:, :T - 1] for k, v in mb.items()}
            loss, m = train_step(run_model, optimizer, scaler, [mb], loss_fn, c.grad_clip,
                                 precision, device, n_steps, ddp=d.enabled)
            for k, v in {"loss": loss, **m}.items():
                stats[k] = stats.get(k, 0.0) + v
            n_steps += 1
    seq_kl = kl.sum(1)                                                         # (B,)
    metrics = {"proxy": ro.scores.mean().item(), "gold": sum(ro.gold) / len(ro.gold),
               "kl": seq_kl.mean().item(), "beta": beta,
               "reward": (ro.scores - beta * seq_kl).mean().item(),
               "length": ro.lengths.float().mean().item(),
               "stopped": ro.stopped.float().mean().item(),
               **{k: v / max(n_steps, 1) for k, v in stats.items()}}
    if d.enabled:                  # equal shards: the mean of the processes' means is the batch's
        import torch.distributed as dist

        keys = sorted(k for k in metrics if k != "beta")
        t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        metrics.update({k: float(v) / d.world_size for k, v in zip(keys, t.tolist())})
    return ro, metrics


def train_ppo(policy: GPT, ref: GPT, rm: ScalarModel, tok, train_items: list[dict],
              eval_items: list[dict], track_items: list[dict], values: dict, c, template: str = "chatml",
              device=None, progress: bool = True, callback: Callable | None = None,
              initial_eval: dict | None = None) -> dict:
    """Run ``c.iterations`` PPO iterations on ``policy`` in place (notebook 06, section 3).

    Each iteration draws ``c.batch_size`` prompts from ``train_items`` (the training split) and
    calls :func:`ppo_iteration`. Every ``c.eval_every`` iterations (and at the start and end)
    the policy is measured on ``eval_items`` with :func:`evaluate_policy` (held-out prompts),
    and every ``c.track_every`` iterations the ``track_items`` get ``c.track_samples`` sampled
    replies each (the slider of section 7). ``callback(iteration, metrics)`` after each iteration (the live plot).
    ``initial_eval``: the starting policy's :func:`evaluate_policy` result on ``eval_items`` with
    this run's settings, measured once for every run that starts from it
    (``stages.get_sft_eval``); it becomes iteration 0 instead of measuring again (the measurement
    has its own generator, so the run is the same either way). The last evaluation keeps its
    replies (notebooks 06-08 pair them prompt by prompt); the others keep each reply's gold only.
    Returns ``{"history", "evals", "track", "seconds"}``.

    Under ``torchrun`` (the path pretraining takes: ``init_distributed``, gloo on CPU, nccl on
    CUDA) each process samples and scores an equal shard of every rollout and the update is
    data-parallel (:func:`ppo_iteration`); ``history`` holds whole-batch means on every process,
    and only rank 0 evaluates, follows prompts and calls ``callback``.
    """
    from .device import choose_precision, grad_scaler
    from .train import configure_optimizer, fine_tune_config, init_distributed
    from .config import TrainConfig

    device = torch.device(device) if device is not None else next(policy.parameters()).device
    d = init_distributed(device)
    if d.enabled:
        if device.type == "cuda":
            device = torch.device("cuda", d.local_rank)
            torch.cuda.set_device(device)
        if c.batch_size % d.world_size or c.minibatch_size % d.world_size:
            raise ValueError(f"PPO under torchrun: batch_size={c.batch_size} and minibatch_size="
                             f"{c.minibatch_size} must both be multiples of the {d.world_size} "
                             f"processes (each takes an equal shard)")
    value = value_model_from(rm)
    ac = ActorCritic(policy, value).to(device)
    ref.to(device).eval()
    rm.to(device).eval()
    for p in list(ref.parameters()) + list(rm.parameters()):
        p.requires_grad_(False)
    precision = choose_precision(device)
    opt_cfg = fine_tune_config(TrainConfig(), lr=c.lr, max_steps=c.iterations, batch_size=c.minibatch_size,
                               weight_decay=0.0)
    optimizer = configure_optimizer(ac, opt_cfg)
    scaler = grad_scaler(device, precision)
    ctl = kl_controller(c)
    # every process draws the same prompts (rng) and keeps its shard; each samples its own stream
    run_seed = c.seed + 1000 * c.train_seed
    gen = torch.Generator(device=device).manual_seed(run_seed + d.rank)
    rng = random.Random(run_seed)
    run_model = ac
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        run_model = DDP(ac, device_ids=[device.index] if device.type == "cuda" else None)
    history, evals, track = [], [], []

    def measure(it):
        if not d.master:           # the weights are the same on every process: rank 0 measures
            return
        e = evaluate_policy(policy, ref, rm, tok, eval_items, values, template, c.max_new_tokens,
                            n_samples=c.eval_samples, seed=c.seed + 1,
                            no_stop_penalty=c.no_stop_penalty, keep_replies=it == c.iterations)
        evals.append({"iteration": it, **e})

    def follow(it):
        rows = [t for t in track_items for _ in range(c.track_samples)]
        if not rows or not d.master:
            return
        e = evaluate_policy(policy, ref, rm, tok, rows, values, template, c.max_new_tokens,
                            seed=c.seed + 2, no_stop_penalty=c.no_stop_penalty)
        track.append({"iteration": it, "replies": e["replies"]})

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if initial_eval is None:
        measure(0)
    elif d.master:
        if (initial_eval["n_prompts"], initial_eval["n_samples"]) != (len(eval_items), c.eval_samples):
            raise ValueError(f"initial_eval measured {initial_eval['n_prompts']} prompts x "
                             f"{initial_eval['n_samples']} replies; this run evaluates "
                             f"{len(eval_items)} x {c.eval_samples}")
        evals.append({"iteration": 0, **{k: v for k, v in initial_eval.items() if k != "replies"}})
    follow(0)
    bar = tqdm(total=c.iterations, desc="PPO", unit="iter", disable=not progress or not d.master)
    for it in range(1, c.iterations + 1):
        batch = [train_items[rng.randrange(len(train_items))] for _ in range(c.batch_size)]
        ac.train()
        t_it = time.perf_counter()
        _, m = ppo_iteration(ac, ref, rm, tok, batch[d.rank::d.world_size], values, c, ctl.beta,
                             optimizer, scaler, precision, device, template, gen, d, run_model)
        ctl.update(m["kl"], c.batch_size)       # the whole batch's KL: beta stays the same everywhere
        history.append({"iteration": it, **m, "seconds": time.perf_counter() - t_it})
        if it % c.eval_every == 0 or it == c.iterations:
            measure(it)
        if it % c.track_every == 0 or it == c.iterations:
            follow(it)
        bar.update(1)
        bar.set_postfix(proxy=f"{m['proxy']:.2f}", gold=f"{m['gold']:.2f}", kl=f"{m['kl']:.2f}")
        if callback is not None and d.master:
            callback(it, history[-1])
    bar.close()
    policy.eval()
    return {"history": history, "evals": evals, "track": track,
            "seconds": time.perf_counter() - t0}


# ============================================================================================
# 6. The runs notebook 06 compares, and the recipe that caches one
# ============================================================================================

# variant -> how it changes the preset's PPOConfig (section 5: reward hacking; 6: stability)
VARIANTS = {
    "main": lambda c: c,
    "beta0": lambda c: dataclasses.replace(c, kl="fixed", beta=0.0, iterations=c.beta0_iterations,
                                           eval_every=c.beta0_eval_every),
    "small_beta": lambda c: dataclasses.replace(c, kl="fixed", beta=c.small_beta, iterations=c.beta0_iterations,
                                                eval_every=c.beta0_eval_every),
    # section 3: the adaptive controller started above the seed's range with a horizon of one
    # rollout (beta moves by up to 20% per rollout at the cpu preset), evaluated at the end
    "fast_kl": lambda c: dataclasses.replace(c, kl="adaptive", beta=c.fast_beta, horizon=c.fast_horizon,
                                             eval_every=c.iterations, track_samples=0),
    "nowhiten": lambda c: dataclasses.replace(c, whiten=False, iterations=c.stability_iterations,
                                              eval_every=c.stability_iterations, track_samples=0),
    "noclip_value": lambda c: dataclasses.replace(c, clip_value=0.0, iterations=c.stability_iterations,
                                                  eval_every=c.stability_iterations, track_samples=0),
    "lr10": lambda c: dataclasses.replace(c, lr=10 * c.lr, iterations=c.stability_iterations,
                                          eval_every=c.stability_iterations, track_samples=0),
    # repeats of the main run with other training seeds (section 4: how much of a difference to
    # SFT is this run and how much is PPO), evaluated at the end only
    **{f"seed_{k}": (lambda c, k=k: dataclasses.replace(c, train_seed=k, eval_every=c.iterations, track_samples=0))
       for k in (1, 2)},
}


def variant_config(c, variant: str):
    """The :class:`~llmlab.config.PPOConfig` of one of :data:`VARIANTS`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown PPO variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[variant](c)


def prompt_sets(world, sft_cfg, c) -> dict:
    """The prompt items of a run: ``train`` (``c.n_prompts`` from the training split),
    ``eval`` (``c.n_eval`` held-out) and ``track`` (``c.n_track`` held-out, one of each kind).

    The held-out decline requests are the world's held-out ones plus ``c.n_eval_declines``
    more from :func:`llmlab.prefs.more_decline_requests` (the world's own are too few to
    measure a refusal rate)."""
    split = sft.split_world(world, sft_cfg.eval_frac, sft_cfg.seed)
    train = prefs.on_policy_items(split, c.n_prompts, c.seed, eval_side=False)
    more = tuple(prefs.more_decline_requests(world, c.n_eval_declines, c.seed))
    held_split = dataclasses.replace(split, eval_decline=split.eval_decline + more)
    held = prefs.on_policy_items(held_split, c.n_eval + 4 * c.n_track, c.seed + 1, eval_side=True)
    return {"train": train, "eval": held[:c.n_eval], "track": held[c.n_eval:c.n_eval + c.n_track]}


def build_sft_eval(c, sft_cfg, world, tok, sft_model: GPT, rm: ScalarModel) -> dict:
    """The recipe of the SFT policy's held-out evaluation (notebooks 06-09): :func:`evaluate_policy`
    of ``sft_model`` (its own reference, so its KL is 0) on :func:`prompt_sets`' ``eval`` items
    with ``c``'s settings, replies kept. Every PPO run starts from this policy and every later
    notebook compares against it, so it is measured once (``stages.get_sft_eval``)."""
    items = prompt_sets(world, sft_cfg, c)["eval"]
    return evaluate_policy(sft_model, sft_model, rm, tok, items, prefs.relation_values(world), sft_cfg.template,
                           c.max_new_tokens, n_samples=c.eval_samples, seed=c.seed + 1,
                           no_stop_penalty=c.no_stop_penalty)


def build_ppo(folder: Path, variant: str, c, sft_cfg, world, tok, sft_model: GPT, rm: ScalarModel,
              device=None, progress: bool = True, callback: Callable | None = None,
              initial_eval: dict | None = None) -> dict:
    """The recipe of one PPO run (notebook 06): the policy and the reference start as copies of
    ``sft_model``, the value model as a copy of ``rm``; :func:`train_ppo` with the variant's
    config (:func:`variant_config`); saves ``model.pt`` (the policy) and ``track.json`` (the
    followed prompts' replies per iteration) in ``folder``; returns the config, the
    per-iteration ``history``, the held-out ``evals`` and ``final_eval`` (its replies kept), and
    the wall time. ``initial_eval``: ``sft_model`` already measured (:func:`train_ppo`)."""
    from .artifacts import atomic_write_text
    from .device import pick_device, seed_everything
    from .train import save_checkpoint

    cv = variant_config(c, variant)
    device = pick_device(device) if not hasattr(device, "type") else device
    seed_everything(cv.seed + 1000 * cv.train_seed)   # the value head's init, dropout: the run's
    sets = prompt_sets(world, sft_cfg, cv)
    values = prefs.relation_values(world)
    policy = copy.deepcopy(sft_model).to(device)
    ref = copy.deepcopy(sft_model).to(device).eval()
    rm = copy.deepcopy(rm).to(device).eval()
    res = train_ppo(policy, ref, rm, tok, sets["train"], sets["eval"], sets["track"], values, cv,
                    sft_cfg.template, device, progress, callback, initial_eval)
    save_checkpoint(Path(folder) / "model.pt", policy.cpu())
    atomic_write_text(Path(folder) / "track.json", json.dumps(res["track"]))
    return {"variant": variant, "config": dataclasses.asdict(cv), "history": res["history"],
            "evals": res["evals"], "initial_eval": res["evals"][0], "final_eval": res["evals"][-1],
            "seconds": round(res["seconds"], 2)}


def rollout_speed(model: GPT, tok, items: list[dict], template: str, max_new_tokens: int,
                  use_cache: bool, seed: int = 0) -> dict:
    """Rollout throughput: generated reply tokens per second of :func:`rollout` on ``items``,
    with or without the KV cache (the benchmark's and section 2's comparison)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    t0 = time.perf_counter()
    ro = rollout(model, tok, items, template, max_new_tokens, gen, use_cache=use_cache)
    s = time.perf_counter() - t0
    n = int(ro.lengths.sum().item())
    return {"tokens": n, "seconds": s, "tokens_per_sec": n / s}
