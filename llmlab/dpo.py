"""Direct preference optimisation: the policy trained on preference pairs with no reward model
and no RL loop (notebook 07).

DPO (Rafailov et al. 2023) starts from the same KL-constrained objective as PPO (notebook 06),

    max_pi  E_{y ~ pi}[r(x, y)] - beta * KL(pi(.|x) || pi_ref(.|x)),

whose maximiser has a closed form, ``pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x)``
(Eq. 4). Solved for the reward, ``r = beta log(pi* / pi_ref) + beta log Z`` (Eq. 5), and put
into the Bradley-Terry model of the annotator's choice, ``Z`` cancels and the preference
likelihood becomes a function of the policy alone -- the DPO loss (Eq. 7):

    L = -log sigmoid(beta * [log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l)]).

Two models are in memory (the policy, trained, and the frozen reference) instead of PPO's four.
This module holds

1. the loss (notebook 07, section 1): :func:`dpo_loss` as a pure function of the four sequence
   log-probabilities, with IPO and conservative DPO as ``loss_type``; :func:`implicit_reward`;
2. reply log-probabilities (section 1): :func:`encode_pair` (reply-only targets),
   :func:`collate_pairs` / :func:`dpo_batch_fn` (right-padded (B, 2, T) batches),
   :func:`pair_logprobs` and :func:`dpo_objective` (the ``loss_fn`` for the shared loop
   :func:`llmlab.train.train`, with the frozen reference in its closure);
3. the derivation checked on a toy (section 2): :func:`toy_optimal_policy`,
   :func:`kl_regularised_objective`, :func:`toy_dpo`;
4. the recipe (sections 3-6): :data:`VARIANTS`, :func:`build_dpo`;
5. the measurements: :func:`implicit_accuracy` and :func:`state_memory` (parameters,
   gradients and optimiser state of the models a method holds). Policies are scored on
   held-out prompts by :func:`llmlab.ppo.evaluate_policy`, the same code as PPO's.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import random
from typing import Callable

import torch
import torch.nn.functional as F

from . import chat
from .model import IGNORE_INDEX, sequence_logprobs

# --------------------------------------------------------------------------------------------
# 1. The loss
# --------------------------------------------------------------------------------------------

LOSS_TYPES = ("dpo", "cdpo", "ipo")

# the knobs a DPO run is tuned by (notebook 07 counts them against PPO's)
HYPERPARAMETERS = ("beta", "lr", "max_steps", "batch_size", "warmup_steps")


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
             loss_type: str = "dpo", label_smoothing: float = 0.0) -> torch.Tensor:
    """The per-pair DPO loss from four sequence log-probabilities; each (B,) -> (B,).

    With ``h = log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l)`` (the log-ratio margin):

    - ``dpo``  (Rafailov et al. 2023, Eq. 7):   ``-log sigmoid(beta h)``;
    - ``cdpo`` (conservative DPO, Mitchell 2023): each label is flipped with probability
      ``eps = label_smoothing``, so ``-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)``;
    - ``ipo``  (Azar et al. 2023, Eq. 17): ``(h - 1 / (2 beta))^2``, a squared loss that
      stops pushing once the margin reaches ``1 / (2 beta)`` (there ``beta`` is their tau).

    The objective takes the mean. When the policy equals the reference, ``h = 0`` and the DPO
    loss is ``log 2``:

    >>> z = torch.zeros(1)
    >>> round(dpo_loss(z, z, z, z, beta=0.1).item(), 4)
    0.6931
    >>> lp = torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-2.5]), torch.tensor([-2.5])
    >>> round(dpo_loss(*lp, beta=0.5).item(), 4)        # h = 1: log(1 + e^-0.5)
    0.4741
    >>> round(dpo_loss(*lp, beta=0.5, loss_type="ipo").item(), 4)   # (1 - 1)^2
    0.0
    """
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)  # (B,)
    if loss_type == "dpo":
        return -F.logsigmoid(beta * h)
    if loss_type == "cdpo":
        eps = label_smoothing
        return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward ``beta * log(pi(y|x) / pi_ref(y|x))`` (Eq. 5 without its
    ``beta log Z(x)``, which is the same for every reply to a prompt); (B,), (B,) -> (B,).

    >>> implicit_reward(torch.tensor([-1.0]), torch.tensor([-3.0]), 0.1)
    tensor([0.2000])
    """
    return beta * (policy_logps - ref_logps)


# --------------------------------------------------------------------------------------------
# 2. Reply log-probabilities and the objective for the shared loop
# --------------------------------------------------------------------------------------------


def reply_example(ids: list[int], mask: list[int]) -> dict:
    """Inputs and reply-only targets of one tokenised conversation, cut after the reply's
    last token (the template's stop token): ``{"x", "y"}`` with ``y = -100`` off the reply.

    >>> reply_example([5, 6, 7, 8, 9], [0, 0, 1, 1, 0])
    {'x': [5, 6, 7], 'y': [-100, 7, 8]}
    """
    last = max(i for i, m in enumerate(mask) if m)
    x, y = chat.make_targets(ids[:last + 1], mask[:last + 1])
    return {"x": x, "y": y}


def encode_pair(pair: dict, tok, template: str, block_size: int) -> dict | None:
    """``{"chosen": {"x", "y"}, "rejected": {"x", "y"}}`` of one preference pair, or None when
    either conversation is longer than ``block_size`` (the reward model's rule, so DPO and the
    RM are measured on the same held-out pairs)."""
    out = {}
    for side in ("chosen", "rejected"):
        ids, mask = chat.tokenize_chat(list(pair["messages"]) + [chat.assistant(pair[side])], tok, template)
        last = max(i for i, m in enumerate(mask) if m)
        if last + 1 > block_size:
            return None
        out[side] = reply_example(ids, mask)
    return out


def encode_pairs(pairs: list[dict], tok, template: str, block_size: int) -> tuple[list, list]:
    """Encode many pairs; returns ``(encoded, kept pairs)`` (pairs too long are dropped)."""
    enc, kept = [], []
    for p in pairs:
        e = encode_pair(p, tok, template, block_size)
        if e is not None:
            enc.append(e)
            kept.append(p)
    return enc, kept


def collate_pairs(encoded: list[dict], pad_id: int) -> dict:
    """A batch of encoded pairs, right-padded to the longest sequence of the batch:
    ``{"idx": (B, 2, T), "targets": (B, 2, T)}``, ``[:, 0]`` chosen and ``[:, 1]`` rejected.

    The pair is the first dimension, as the shared loop expects (it shards along it); padding
    is ``pad_id`` in ``idx`` and ``-100`` in ``targets``, so it counts for nothing in
    :func:`llmlab.model.sequence_logprobs`, and causal attention keeps it from changing the
    real tokens' logits.
    """
    seqs = [e[side] for e in encoded for side in ("chosen", "rejected")]
    T = max(len(s["x"]) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)                 # (2B, T)
    tgt = torch.full((len(seqs), T), IGNORE_INDEX, dtype=torch.long)           # (2B, T)
    for b, s in enumerate(seqs):
        idx[b, :len(s["x"])] = torch.tensor(s["x"])
        tgt[b, :len(s["y"])] = torch.tensor(s["y"])
    return {"idx": idx.view(len(encoded), 2, T), "targets": tgt.view(len(encoded), 2, T)}


def dpo_batch_fn(pad_id: int, tok=None, template: str = "chatml", block_size: int | None = None) -> Callable:
    """A ``batch_fn`` for :func:`llmlab.train.train`: ``batch_size`` random pairs, collated.

    The pairs may be encoded already (:func:`encode_pair`) or raw preference pairs, encoded
    with ``tok`` the first time they are drawn (a short run sees a few hundred of notebook 05's
    ten thousand pairs, so encoding all of them up front would cost more than training); a raw
    pair too long for ``block_size`` is skipped and another drawn.
    """
    cache: dict = {}

    def encoded(data, i):
        if not isinstance(data[i]["chosen"], str):
            return data[i]
        key = (id(data), i)
        if key not in cache:
            cache[key] = encode_pair(data[i], tok, template, block_size)
        return cache[key]

    def batch_fn(data: list[dict], batch_size: int, generator: torch.Generator) -> dict:
        rows: list = []
        while len(rows) < batch_size:
            ix = torch.randint(len(data), (batch_size - len(rows),), generator=generator)  # (b,)
            rows += [e for e in (encoded(data, i) for i in ix.tolist()) if e is not None]
        return collate_pairs(rows, pad_id)
    return batch_fn


def pair_logprobs(model, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sequence log-probabilities of the replies of a batch of pairs, summed over reply tokens:
    idx, targets (B, 2, T) -> (B, 2), one forward pass for chosen and rejected together."""
    B, two, T = idx.shape
    logits, _ = model(idx.reshape(B * two, T))                                 # (2B, T, V)
    return sequence_logprobs(logits, targets.reshape(B * two, T)).view(B, two)  # (B, 2)


def dpo_objective(ref, beta: float, loss_type: str = "dpo", label_smoothing: float = 0.0) -> Callable:
    """The ``loss_fn(model, batch) -> (loss, metrics)`` of DPO for :func:`llmlab.train.train`.

    ``ref`` is the frozen reference (the SFT model), kept in this closure: its log-probabilities
    are computed without gradients on the same batch. Metrics (means over the batch): implicit
    reward ``accuracy`` (chosen above rejected) and ``margin``, the policy's ``chosen_logp``
    and ``rejected_logp``, and the implicit rewards ``chosen_reward`` / ``rejected_reward``.
    """
    ref.eval().requires_grad_(False)

    def loss_fn(model, batch: dict) -> tuple[torch.Tensor, dict]:
        idx, targets = batch["idx"], batch["targets"]                           # (B, 2, T)
        logps = pair_logprobs(model, idx, targets)                              # (B, 2)
        with torch.no_grad():
            ref_logps = pair_logprobs(ref.to(idx.device), idx, targets)         # (B, 2)
        losses = dpo_loss(logps[:, 0], logps[:, 1], ref_logps[:, 0], ref_logps[:, 1], beta,
                          loss_type, label_smoothing)                           # (B,)
        r = implicit_reward(logps.detach(), ref_logps, beta)                    # (B, 2)
        return losses.mean(), {
            "accuracy": (r[:, 0] > r[:, 1]).float().mean().item(),
            "margin": (r[:, 0] - r[:, 1]).mean().item(),
            "chosen_logp": logps[:, 0].mean().item(), "rejected_logp": logps[:, 1].mean().item(),
            "chosen_reward": r[:, 0].mean().item(), "rejected_reward": r[:, 1].mean().item()}
    return loss_fn


# --------------------------------------------------------------------------------------------
# 3. The derivation, checked on a toy with a handful of discrete replies
# --------------------------------------------------------------------------------------------


def toy_optimal_policy(ref_probs: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """The maximiser of :func:`kl_regularised_objective` (Eq. 4):
    ``pi*(y) = pi_ref(y) exp(r(y) / beta) / Z``; (K,), (K,) -> (K,).

    >>> toy_optimal_policy(torch.tensor([0.5, 0.5]), torch.tensor([math.log(3), 0.0]), 1.0)
    tensor([0.7500, 0.2500])
    """
    w = ref_probs * torch.exp((rewards - rewards.max()) / beta)                # (K,)
    return w / w.sum()


def kl_regularised_objective(pi: torch.Tensor, ref_probs: torch.Tensor, rewards: torch.Tensor,
                             beta: float) -> torch.Tensor:
    """``E_{y ~ pi}[r(y)] - beta KL(pi || pi_ref)`` for a distribution over K replies (Eq. 3,
    notebook 06's objective); its maximum is ``beta log Z`` with ``Z = sum pi_ref exp(r/beta)``."""
    return (pi * rewards).sum() - beta * (pi * (pi.log() - ref_probs.log())).sum()


def toy_all_pairs(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every ordered pair ``(w, l)`` of K replies weighted by the Bradley-Terry probability that
    an annotator picks ``w`` over ``l``, ``sigmoid(r_w - r_l)``: the expected DPO loss over
    these is the loss on infinitely many labelled pairs. Returns (chosen, rejected, weight)."""
    K = len(rewards)
    w, l = zip(*[(i, j) for i in range(K) for j in range(K) if i != j])
    w, l = torch.tensor(w), torch.tensor(l)
    return w, l, torch.sigmoid(rewards[w] - rewards[l])


def toy_sampled_pairs(rewards: torch.Tensor, n: int, seed: int = 0):
    """``n`` labelled pairs: two distinct replies drawn uniformly, the label drawn from the
    Bradley-Terry choice. Returns (chosen, rejected, weight = 1)."""
    rng = random.Random(seed)
    w, l = [], []
    for _ in range(n):
        a, b = rng.sample(range(len(rewards)), 2)
        a_wins = rng.random() < torch.sigmoid(rewards[a] - rewards[b]).item()
        w.append(a if a_wins else b)
        l.append(b if a_wins else a)
    return torch.tensor(w), torch.tensor(l), torch.ones(n)


def toy_dpo(ref_probs: torch.Tensor, pairs: tuple, beta: float, iters: int = 100) -> torch.Tensor:
    """Minimise the DPO loss over a tabular policy (one logit per reply, starting at the
    reference) on ``pairs = (chosen, rejected, weight)``; returns the policy's probabilities (K,).

    The loss depends on the logits only through their differences, linearly inside a convex
    ``-log sigmoid``, so it is convex and L-BFGS finds its minimum. With every pair weighted by
    its Bradley-Terry probability (:func:`toy_all_pairs`) the minimum is
    :func:`toy_optimal_policy` -- the claim of the DPO paper's Theorem 1, checked numerically.
    """
    w, l, weight = pairs
    ref_logp = ref_probs.log()
    theta = ref_logp.clone().requires_grad_(True)                              # (K,)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(theta, 0)                                     # (K,)
        losses = dpo_loss(logp[w], logp[l], ref_logp[w], ref_logp[l], beta)     # (P,)
        loss = (weight * losses).sum() / weight.sum()
        loss.backward()
        return loss

    opt.step(closure)
    return torch.softmax(theta.detach(), 0)


# --------------------------------------------------------------------------------------------
# 4. The recipe: one DPO run through the shared loop
# --------------------------------------------------------------------------------------------

# the runs notebook 07 compares; a beta of None is the config's ``beta``. The frontier adds one
# run per value of ``DPOConfig.betas`` (see :func:`variants`).
VARIANTS = {
    "main": {"loss_type": "dpo", "beta": None, "pairs": "all"},
    "ipo": {"loss_type": "ipo", "beta": "ipo_beta", "pairs": "all"},
    "conservative": {"loss_type": "cdpo", "beta": None, "pairs": "all"},
    "small_beta": {"loss_type": "dpo", "beta": "small_beta", "pairs": "all"},
    "on_policy": {"loss_type": "dpo", "beta": None, "pairs": "on_policy"},
    "off_policy": {"loss_type": "dpo", "beta": None, "pairs": "off_policy"},
}


def beta_variant(beta: float) -> str:
    """The variant name of a frontier run.

    >>> beta_variant(0.03)
    'beta_0.03'
    """
    return f"beta_{beta:g}"


def variants(c) -> dict:
    """``{name: settings}`` of every run for the :class:`~llmlab.config.DPOConfig` ``c``:
    :data:`VARIANTS` with their betas filled in, plus one ``beta_<b>`` run per frontier beta
    (the main run stands for ``c.beta``) and, per seed of ``c.seeds``, ``seed_<s>`` and
    ``on_policy_seed_<s>``: the main and the on-policy run's settings with another batch order."""
    out = {}
    for name, s in VARIANTS.items():
        beta = c.beta if s["beta"] is None else getattr(c, s["beta"])
        out[name] = dict(s, beta=beta, label_smoothing=c.label_smoothing if s["loss_type"] == "cdpo" else 0.0)
    for b in c.betas:
        if b != c.beta:
            out[beta_variant(b)] = dict(VARIANTS["main"], beta=b, label_smoothing=0.0)
    for sd in c.seeds:
        if sd != c.seed:
            out[f"seed_{sd}"] = dict(VARIANTS["main"], beta=c.beta, label_smoothing=0.0, seed=sd)
            out[f"on_policy_seed_{sd}"] = dict(VARIANTS["on_policy"], beta=c.beta, label_smoothing=0.0, seed=sd)
    return out


def select_pairs(pairs: list[dict], which: str) -> list[dict]:
    """``all`` pairs, ``on_policy`` (two of the SFT model's own samples) or ``off_policy`` (the
    controlled variants, written by the world's templates rather than sampled from the policy)."""
    if which == "all":
        return list(pairs)
    if which == "on_policy":
        return [p for p in pairs if p["category"] == "on_policy"]
    if which == "off_policy":
        return [p for p in pairs if p["category"] != "on_policy"]
    raise ValueError(f"unknown pair selection {which!r}; expected all, on_policy or off_policy")


def dpo_train_config(c, train_cfg):
    """The shared loop's :class:`~llmlab.config.TrainConfig` for a DPO run."""
    from .train import fine_tune_config

    return fine_tune_config(train_cfg, lr=c.lr, max_steps=c.max_steps, batch_size=c.batch_size,
                            warmup_steps=c.warmup_steps, weight_decay=0.0,
                            eval_every=c.eval_every, eval_batches=c.eval_batches, seed=c.seed)


def train_dpo(policy, ref, train_pairs: list[dict], val_pairs: list[dict], cfg, pad_id: int, beta: float,
              loss_type: str = "dpo", label_smoothing: float = 0.0, device=None,
              callback: Callable | None = None, progress: bool = True, tok=None,
              template: str = "chatml"):
    """Train ``policy`` in place with DPO against the frozen ``ref`` (notebook 07, section 3);
    returns the loop's :class:`~llmlab.train.TrainResult`. The pairs are encoded
    (:func:`encode_pairs`) or raw (then ``tok`` and ``template`` encode them when drawn).

    This is pretraining's, SFT's and the reward model's loop, :func:`llmlab.train.train`, with
    a batch of pairs (:func:`dpo_batch_fn`) and the objective :func:`dpo_objective`.
    """
    from .train import train

    device = next(policy.parameters()).device if device is None else device
    ref.to(device)
    block = policy.config.block_size
    return train(policy, train_pairs, val_pairs, cfg, device=device, callback=callback,
                 batch_fn=dpo_batch_fn(pad_id, tok, template, block),
                 loss_fn=dpo_objective(ref, beta, loss_type, label_smoothing), progress=progress)


def build_dpo(folder, variant: str, c, train_cfg, model_cfg, template: str, tok, prefs_data: dict,
              sft_model, device=None, progress: bool = True) -> dict:
    """The recipe of one DPO run (notebook 07): the policy starts as a copy of ``sft_model``
    and trains on ``prefs_data["train"]`` (notebook 05's pairs, or the subset the variant
    names) against a frozen copy of it; saves ``model.pt`` in ``folder`` and returns the run's
    settings, wall time, the held-out curves (policy log-probabilities of chosen and rejected
    replies, implicit-reward margin and accuracy on the loop's fixed held-out batches) and the
    implicit-reward accuracy on every held-out pair.

    ``variant`` is a key of :func:`variants`; ``c`` the :class:`~llmlab.config.DPOConfig`,
    ``train_cfg`` pretraining's :class:`~llmlab.config.TrainConfig`.
    """
    import time

    from .device import seed_everything
    from .train import save_checkpoint

    runs = variants(c)
    if variant not in runs:
        raise ValueError(f"unknown DPO variant {variant!r}; expected one of {sorted(runs)}")
    s = runs[variant]
    c = dataclasses.replace(c, seed=s.get("seed", c.seed))     # a seed_<s> run's batch order
    block = model_cfg.block_size
    train_pairs = select_pairs(prefs_data["train"], s["pairs"])   # encoded when drawn
    if not train_pairs:
        raise ValueError(f"DPO variant {variant!r}: no {s['pairs']} training pairs")
    val_enc, _ = encode_pairs(prefs_data["val"], tok, template, block)
    seed_everything(c.seed)
    policy = copy.deepcopy(sft_model).train()                   # trained
    ref = copy.deepcopy(sft_model).eval().requires_grad_(False)  # frozen
    cfg = dpo_train_config(c, train_cfg)
    t0 = time.perf_counter()
    res = train_dpo(policy, ref, train_pairs, val_enc, cfg, tok.pad_id, s["beta"], s["loss_type"],
                    s["label_smoothing"], device, progress=progress, tok=tok, template=template)
    seconds = time.perf_counter() - t0
    acc = implicit_accuracy(policy, ref, val_enc, tok.pad_id)
    save_checkpoint(folder / "model.pt", policy.cpu())
    keys = ("accuracy", "margin", "chosen_logp", "rejected_logp", "chosen_reward", "rejected_reward")
    return {"variant": variant, **s, "steps": cfg.max_steps, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "n_train": len(train_pairs), "n_val": len(val_enc),
            "train_seconds": round(seconds, 2), "val_correct": acc["correct"], "val_n": acc["n"],
            "val_accuracy": acc["correct"] / max(acc["n"], 1),
            "val_margins": [round(m, 4) for m in acc["margins"]],
            "curve": [{"step": st, **{k: m.get(k) for k in keys}} for st, m in res.val_metrics],
            "train_losses": [round(x, 4) for x in res.train_losses],
            "train_curve": [{k: round(m[k], 4) for k in keys} for m in res.train_metrics]}


# --------------------------------------------------------------------------------------------
# 5. Measurements
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def reply_logprobs(model, encoded: list[dict], pad_id: int, batch_size: int = 64) -> list[float]:
    """Sequence log-probabilities of encoded replies (``{"x", "y"}``), in order."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["x"]))
    out = [0.0] * len(encoded)
    for s in range(0, len(order), batch_size):
        grp = order[s:s + batch_size]
        T = max(len(encoded[i]["x"]) for i in grp)
        idx = torch.full((len(grp), T), pad_id, dtype=torch.long)               # (B, T)
        tgt = torch.full((len(grp), T), IGNORE_INDEX, dtype=torch.long)         # (B, T)
        for b, i in enumerate(grp):
            idx[b, :len(encoded[i]["x"])] = torch.tensor(encoded[i]["x"])
            tgt[b, :len(encoded[i]["y"])] = torch.tensor(encoded[i]["y"])
        logits, _ = model(idx.to(device))                                       # (B, T, V)
        for i, lp in zip(grp, sequence_logprobs(logits, tgt.to(device)).tolist()):
            out[i] = lp
    model.train(was)
    return out


def pair_scores(policy, ref, encoded: list[dict], pad_id: int) -> dict:
    """Log-ratios ``log pi/pi_ref`` of every chosen and rejected reply (the implicit reward
    divided by beta), and the policy's and reference's log-probabilities behind them."""
    seqs = [e["chosen"] for e in encoded] + [e["rejected"] for e in encoded]
    lp, lr = reply_logprobs(policy, seqs, pad_id), reply_logprobs(ref, seqs, pad_id)
    n = len(encoded)
    return {"policy_chosen": lp[:n], "policy_rejected": lp[n:], "ref_chosen": lr[:n],
            "ref_rejected": lr[n:],
            "ratio_chosen": [a - b for a, b in zip(lp[:n], lr[:n])],
            "ratio_rejected": [a - b for a, b in zip(lp[n:], lr[n:])]}


def implicit_accuracy(policy, ref, encoded: list[dict], pad_id: int) -> dict:
    """Held-out pairs where the implicit reward ranks the chosen reply above the rejected one
    (a tie counts as wrong, as for the reward model): ``{"correct", "n", "margins"}``. Beta
    scales every reward alike, so it does not change the ranking and is left out."""
    s = pair_scores(policy, ref, encoded, pad_id)
    margins = [a - b for a, b in zip(s["ratio_chosen"], s["ratio_rejected"])]
    return {"correct": sum(m > 0 for m in margins), "n": len(margins), "margins": margins}


def state_memory(trained: list, frozen: list, cfg) -> dict:
    """Bytes a method keeps in memory for its models, measured on the tensors themselves: the
    parameters of every model, plus the gradients and AdamW state (two moments per weight) of
    each trained one, after one optimiser step of the shared loop's optimiser
    (:func:`llmlab.train.configure_optimizer`). Activations are left out (they depend on the
    batch, not on the method). Works on copies, so the models are untouched.
    """
    from .train import configure_optimizer

    def nbytes(ts):
        seen, total = set(), 0
        for t in ts:
            if torch.is_tensor(t) and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total

    params = grads = opt_state = 0
    for m in frozen:
        params += nbytes(m.parameters())
    for m in trained:
        m = copy.deepcopy(m).train().requires_grad_(True)
        opt = configure_optimizer(m, cfg)
        sum(p.sum() for p in m.parameters()).mul(0.0).backward()
        opt.step()
        params += nbytes(m.parameters())
        grads += nbytes(p.grad for p in m.parameters() if p.grad is not None)
        opt_state += nbytes(v for st in opt.state.values() for v in st.values()
                            if torch.is_tensor(v) and v.dim() > 0)
    return {"models": len(trained) + len(frozen), "trained": len(trained), "params": params,
            "grads": grads, "optimizer": opt_state, "total": params + grads + opt_state}
