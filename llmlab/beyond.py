"""What came after RLHF: rejection sampling, GRPO, iterative DPO and AI feedback (notebook 08).

Each method here is a small change to what notebooks 05-07 built, run on the same prompts and
scored by the same gold judge (:func:`llmlab.ppo.evaluate_policy`):

1. **Best-of-N and rejection-sampling fine-tuning** (notebook 08, section 1; Llama 2, Touvron
   et al. 2023, Sec. 3.2.3): sample N replies per prompt from the SFT model, keep the reward
   model's favourite (:func:`best_index`, :func:`rejection_sample`), fine-tune on the kept
   replies with SFT's own loss (:func:`llmlab.sft.sft_train`). Best-of-N itself is
   :func:`llmlab.ppo.best_of_n` (inference-time, no training).
2. **GRPO** (section 2; Shao et al. 2024, DeepSeekMath, Sec. 4.1): PPO without the value model.
   G replies per prompt; each reply's advantage is its reward standardised within its group
   (:func:`group_advantages`); the KL to the reference is a term of the loss, estimated per
   token with the "k3" estimator (:func:`k3_kl`), not a penalty in the reward
   (:func:`grpo_loss`). Three models (policy, reference, reward model) instead of PPO's four.
3. **Iterative (online) DPO** (section 3; Xiong et al. 2024; Llama 3): rounds of sampling from
   the current policy, pairs labelled by the reward model (:func:`rm_pairs`), DPO from the
   previous round's policy against the SFT reference (:func:`iterative_dpo`).
4. **AI feedback with a constitution** (section 4; Bai et al. 2022, Constitutional AI; Lee et
   al. 2023, RLAIF): principles (:data:`CONSTITUTION`); the SFT model asked which of two
   replies follows a principle, scored by the log-probability of its answer "A" or "B" in both
   orders (:func:`judge_messages`, :func:`choice_prob`, :func:`debiased_preference`,
   :func:`ai_preferences`); DPO on its labels against DPO on notebook 05's labels of the same
   pairs (:func:`build_rlaif`). The supervised half: the SFT model critiques and revises its
   own replies under a principle (:func:`critique_revise`) and is fine-tuned on the revisions
   (:func:`build_cai_sl`).

The recipes of the cached runs are :func:`build_rft`, :func:`build_grpo`,
:func:`build_iterative_dpo`, :func:`build_rlaif` and :func:`build_cai_sl`; :mod:`llmlab.stages`
declares them.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Callable

import torch

from . import chat, dpo, ppo, prefs, sft

# the knobs each method is tuned by (section 5 counts them beside PPO's and DPO's)
BEST_OF_N_HYPERPARAMETERS = ("n",)
RFT_HYPERPARAMETERS = ("rft_prompts", "rft_samples", "rft_steps", "rft_batch_size", "rft_lr")
GRPO_HYPERPARAMETERS = ("grpo_iterations", "grpo_prompts", "grpo_group", "grpo_epochs",
                        "grpo_minibatch_size", "grpo_lr", "grpo_clip", "grpo_beta", "max_new_tokens",
                        "no_stop_penalty", "grad_clip")
ITERATIVE_DPO_HYPERPARAMETERS = dpo.HYPERPARAMETERS + ("idpo_rounds", "idpo_prompts", "idpo_samples")
RLAIF_HYPERPARAMETERS = dpo.HYPERPARAMETERS + ("constitution",)


def evaluate(policy, ref, rm, tok, items: list[dict], values: dict, template: str, pc,
             keep_replies: bool = True) -> dict:
    """:func:`llmlab.ppo.evaluate_policy` with notebook 06's settings (``pc`` its
    :class:`~llmlab.config.PPOConfig`): the same prompts, seed and reply length, so every
    number of notebooks 06-08 is measured alike. The replies are kept (their gold scores make
    :func:`paired_difference` possible)."""
    return ppo.evaluate_policy(policy, ref, rm, tok, items, values, template, pc.max_new_tokens,
                               n_samples=pc.eval_samples, seed=pc.seed + 1,
                               no_stop_penalty=pc.no_stop_penalty, keep_replies=keep_replies)


# the paired gold difference of two evaluations lives beside evaluate_policy in llmlab.ppo
# (notebook 06 uses it first); notebooks 07-09 call it by this name too
paired_difference = ppo.paired_difference


# ============================================================================================
# 1. Best-of-N and rejection-sampling fine-tuning
# ============================================================================================


def best_index(scores: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """Index of the highest-scoring of the first ``n`` candidates of each prompt.

    scores (P, N) -> (P,); ``n`` defaults to all N. A tie goes to the earliest candidate.

    >>> best_index(torch.tensor([[0.1, 0.9, 0.5], [2.0, -1.0, 3.0]]), n=2)
    tensor([1, 0])
    """
    n = scores.size(1) if n is None else n
    return scores[:, :n].argmax(dim=1)


@torch.no_grad()
def sample_candidates(model, rm, tok, items: list[dict], values: dict, n: int, template: str,
                      max_new_tokens: int, seed: int = 0, no_stop_penalty: float = 1.0,
                      batch_size: int = 256) -> dict:
    """``n`` replies per prompt item sampled at temperature 1 (:func:`llmlab.ppo.rollout`),
    each scored by the reward model (with the missing-stop penalty) and, logged only, by the
    gold judge. Returns ``{"texts", "stopped", "gold"}`` as lists of P lists of n and
    ``"proxy"`` (P, n)."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    rows = [it for it in items for _ in range(n)]
    texts, stopped, gold, proxy = [], [], [], []
    for s in range(0, len(rows), batch_size):
        ro = ppo.score_rollout(ppo.rollout(model, tok, rows[s:s + batch_size], template,
                                           max_new_tokens, gen), rm, values, no_stop_penalty)
        texts += ro.texts
        stopped += [bool(x) for x in ro.stopped.tolist()]
        gold += ro.gold
        proxy += ro.scores.tolist()

    def per_prompt(xs):
        return [xs[i * n:(i + 1) * n] for i in range(len(items))]

    return {"texts": per_prompt(texts), "stopped": per_prompt(stopped), "gold": per_prompt(gold),
            "proxy": torch.tensor(proxy).view(len(items), n)}


def rejection_sample(items: list[dict], cand: dict, require_stop: bool = True) -> list[dict]:
    """Llama 2's rejection sampling: for each prompt keep the candidate the reward model scores
    highest (:func:`best_index`), as a training conversation for SFT's loss. With
    ``require_stop`` only replies that ended their turn compete (SFT would otherwise teach a
    cut-off reply), and a prompt with none is dropped.

    Returns ``[{"messages", "kind", "proxy", "gold"}]``.
    """
    scores = cand["proxy"].clone()                                             # (P, N)
    ok = torch.tensor([[bool(s) and bool(t) for s, t in zip(ss, ts)]
                       for ss, ts in zip(cand["stopped"], cand["texts"])])     # (P, N)
    if not require_stop:
        ok = torch.tensor([[bool(t) for t in ts] for ts in cand["texts"]])
    scores[~ok] = float("-inf")
    best = best_index(scores).tolist()
    out = []
    for i, (it, b) in enumerate(zip(items, best)):
        if not ok[i, b]:
            continue
        out.append({"messages": list(it["messages"]) + [chat.assistant(cand["texts"][i][b])],
                    "kind": it["kind"], "proxy": float(cand["proxy"][i, b]), "gold": cand["gold"][i][b]})
    return out


def train_rft(policy, examples: list[dict], tok, c, train_cfg, template: str, device=None,
              progress: bool = True):
    """Fine-tune ``policy`` in place on the kept replies with SFT's loss (notebook 04's
    :func:`llmlab.sft.sft_train`: reply-only targets, the shared loop); the last tenth of the
    examples is the validation set. Returns the loop's :class:`~llmlab.train.TrainResult`."""
    from .train import fine_tune_config

    enc, _ = sft.encode_examples(examples, tok, template, policy.config.block_size)
    n_val = max(1, len(enc) // 10)
    cfg = fine_tune_config(train_cfg, lr=c.rft_lr, max_steps=c.rft_steps, batch_size=c.rft_batch_size,
                           warmup_steps=min(5, c.rft_steps // 5), eval_batches=2, seed=c.seed)
    return sft.sft_train(policy, enc[:-n_val] or enc, enc[-n_val:], cfg, tok.pad_id, device,
                         progress=progress)


def build_rft(folder: Path, c, pc, sft_cfg, train_cfg, world, tok, sft_model, rm, device=None,
              progress: bool = True) -> dict:
    """The recipe of rejection-sampling fine-tuning (notebook 08, section 1): ``c.rft_samples``
    replies to each of ``c.rft_prompts`` training-split prompts (notebook 06's pool), the reward
    model's best kept (:func:`rejection_sample`), :func:`train_rft` from the SFT model; saves
    ``model.pt`` and returns the kept data's summary, the losses, wall times and the held-out
    ``final_eval`` (:func:`evaluate`)."""
    from .device import seed_everything
    from .train import save_checkpoint

    seed_everything(c.seed)
    device = device or next(sft_model.parameters()).device
    sets = ppo.prompt_sets(world, sft_cfg, pc)
    values = prefs.relation_values(world)
    items = sets["train"][:c.rft_prompts]
    t0 = time.perf_counter()
    cand = sample_candidates(sft_model, rm, tok, items, values, c.rft_samples, sft_cfg.template,
                             pc.max_new_tokens, c.seed, pc.no_stop_penalty)
    kept, cut_off = rejection_sample(items, cand), False
    if not kept:      # a model too small to end its turns (the smoke preset): keep cut-off replies
        kept, cut_off = rejection_sample(items, cand, require_stop=False), True
    t_sample = time.perf_counter() - t0
    if not kept:
        raise ValueError("rejection sampling kept no reply (every sampled reply was empty)")
    policy = copy.deepcopy(sft_model).train()
    t1 = time.perf_counter()
    res = train_rft(policy, kept, tok, c, train_cfg, sft_cfg.template, device, progress)
    t_train = time.perf_counter() - t1
    policy.eval()
    final = evaluate(policy, sft_model, rm, tok, sets["eval"], values, sft_cfg.template, pc)
    save_checkpoint(Path(folder) / "model.pt", policy.cpu())
    all_gold = [g for row in cand["gold"] for g in row]
    return {"n_prompts": len(items), "n_samples": c.rft_samples, "n_kept": len(kept), "cut_off_kept": cut_off,
            "sampled_gold": sum(all_gold) / len(all_gold),
            "kept_gold": sum(k["gold"] for k in kept) / len(kept),
            "kept_proxy": sum(k["proxy"] for k in kept) / len(kept),
            "kept_kinds": {k: sum(e["kind"] == k for e in kept) for k in sorted({e["kind"] for e in kept})},
            "train_losses": [round(x, 4) for x in res.train_losses],
            "sample_seconds": round(t_sample, 2), "train_seconds": round(t_train, 2),
            "seconds": round(t_sample + t_train, 2), "final_eval": final}


# ============================================================================================
# 2. GRPO: group-relative advantages, no value model
# ============================================================================================


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, scale: bool = True) -> torch.Tensor:
    """GRPO's outcome advantages (Shao et al. 2024, Sec. 4.1.2): each reply's reward minus the
    mean of its group, divided by the group's standard deviation (``scale=False`` leaves the
    division out, as Dr. GRPO, Liu et al. 2025, argues). rewards (P, G) -> (P, G): one group of
    G replies per prompt. The group mean stands in for PPO's value model as the baseline.

    The standard deviation is the unbiased one (``torch.std``), as in the paper's code. A group
    whose replies all score the same has advantage 0 everywhere: it teaches nothing.

    >>> a = group_advantages(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    >>> [[round(x, 4) for x in row] for row in a.tolist()]
    [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)                     # (P, G)
    if not scale:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)                 # (P, G)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """The per-token KL estimate of GRPO's loss (Shao et al. 2024, Eq. 4; Schulman's "k3"):
    ``pi_ref / pi - log(pi_ref / pi) - 1``, on tokens sampled from pi. (B, T), (B, T) -> (B, T).

    Unlike PPO's ``log pi - log pi_ref`` (:func:`llmlab.ppo.per_token_kl`, "k1") it is never
    negative, and it is still unbiased for ``KL(pi || pi_ref)``; it is zero where pi = pi_ref.

    >>> [round(x, 4) for x in k3_kl(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.0])).tolist()]
    [0.0, 0.7183]
    """
    r = ref_logprobs - logprobs                                                # log(pi_ref / pi)
    return torch.exp(r) - r - 1.0


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2,
              beta: float = 0.04) -> tuple[torch.Tensor, dict]:
    """GRPO's objective as a loss to minimise (Shao et al. 2024, Eq. 3): PPO's clipped surrogate
    (:func:`llmlab.ppo.ppo_clip_loss`) with every token of a reply given its reply's group
    advantage, plus ``beta`` times the k3 KL to the reference (:func:`k3_kl`).

    logprobs, old_logprobs, ref_logprobs, mask (B, T); advantages (B,). The mean is over all
    reply tokens of the batch (as :func:`~llmlab.ppo.ppo_clip_loss`; the paper averages each
    reply's tokens first, so a long reply weighs the same as a short one).

    >>> z = torch.zeros(1, 2)
    >>> loss, m = grpo_loss(z, z, z, torch.tensor([1.0]), torch.ones(1, 2))
    >>> round(loss.item(), 4), m["kl"]                   # ratio 1, no KL: loss = -advantage
    (-1.0, 0.0)
    """
    adv = advantages.view(-1, 1).expand_as(logprobs)                           # (B, T)
    pg, stats = ppo.ppo_clip_loss(logprobs, old_logprobs, adv, mask, clip)
    kl = ppo.masked_mean(k3_kl(logprobs, ref_logprobs), mask)
    return pg + beta * kl, {"policy_loss": pg.item(), "kl": kl.item(), **stats}


def grpo_objective(c) -> Callable:
    """:func:`grpo_loss` as a ``loss_fn(model, batch) -> (loss, metrics)`` for
    :func:`llmlab.train.train_step` (``model`` is the policy, a GPT)."""
    def loss_fn(model, batch):
        logits, _ = model(batch["idx"])                                        # (b, T, V)
        lp = ppo.token_logprobs(logits, batch["idx"])                          # (b, T-1)
        return grpo_loss(lp, batch["logprobs"], batch["ref_logprobs"], batch["advantages"],
                         batch["mask"], c.grpo_clip, c.grpo_beta)
    return loss_fn


def grpo_iteration(policy, ref, rm, tok, items: list[dict], values: dict, c, pc, optimizer, scaler,
                   precision, device, template: str = "chatml",
                   generator: torch.Generator | None = None) -> dict:
    """One GRPO iteration (notebook 08, section 2). Returns its metrics."""
    from .train import train_step

    G = c.grpo_group
    # 1) generate: G replies per prompt, sampled at temperature 1 (a group per prompt)
    rows = [it for it in items for _ in range(G)]
    ro = ppo.rollout(policy, tok, rows, template, pc.max_new_tokens, generator)
    # 2) score: the reward model at the last reply token; the gold judge only logged
    ppo.score_rollout(ro, rm, values, pc.no_stop_penalty)
    # 3) advantages: standardised within each group (no value model, no GAE)
    adv = group_advantages(ro.scores.view(len(items), G)).view(-1)            # (P*G,)
    # 4) log-probabilities of the sampling policy and the reference
    ro.logprobs = ppo.logprobs_of(policy, ro.idx)                              # (B, T-1)
    ro.ref_logprobs = ppo.logprobs_of(ref, ro.idx)                             # (B, T-1)
    # 5) update: epochs of shuffled minibatches, each one step of the shared loop's optimiser
    data = {"idx": ro.idx, "mask": ro.mask, "logprobs": ro.logprobs,
            "ref_logprobs": ro.ref_logprobs, "advantages": adv}
    loss_fn = grpo_objective(c)
    B = ro.idx.size(0)
    stats: dict = {}
    n_steps = 0
    policy.train()
    for _ in range(c.grpo_epochs):
        order = torch.randperm(B, generator=generator, device=generator.device if generator else "cpu")
        for s in range(0, B, c.grpo_minibatch_size):
            sel = order[s:s + c.grpo_minibatch_size].to(ro.idx.device)
            mb = {k: v[sel] for k, v in data.items()}
            T = int(mb["mask"].sum(0).nonzero().max()) + 2                     # crop right padding
            mb = {k: v if k == "advantages" else v[:, :T] if k == "idx" else v[:, :T - 1]
                  for k, v in mb.items()}
            loss, m = train_step(policy, optimizer, scaler, [mb], loss_fn, pc.grad_clip, precision,
                                 device, n_steps)
            for k, v in {"loss": loss, **m}.items():
                stats[k] = stats.get(k, 0.0) + v
            n_steps += 1
    seq_kl = ppo.per_token_kl(ro.logprobs, ro.ref_logprobs, ro.mask).sum(1)    # (B,) k1, as PPO logs
    flat = (ro.scores.view(len(items), G).std(dim=1) == 0).float().mean().item()
    return {"proxy": ro.scores.mean().item(), "gold": sum(ro.gold) / len(ro.gold),
            "kl": seq_kl.mean().item(), "length": ro.lengths.float().mean().item(),
            "stopped": ro.stopped.float().mean().item(), "flat_groups": flat,
            **{f"update_{k}": v / max(n_steps, 1) for k, v in stats.items()}}


def train_grpo(policy, ref, rm, tok, train_items: list[dict], values: dict, c, pc,
               template: str = "chatml", device=None, progress: bool = True,
               callback: Callable | None = None) -> dict:
    """Run ``c.grpo_iterations`` GRPO iterations on ``policy`` in place, each on
    ``c.grpo_prompts`` prompts drawn from ``train_items``, through
    :func:`llmlab.train.train_step` (the optimiser step of every stage). Returns the
    per-iteration ``history`` (each with its wall ``seconds``) and the total ``seconds``."""
    from tqdm.auto import tqdm

    from .config import TrainConfig
    from .device import choose_precision, grad_scaler
    from .train import configure_optimizer, fine_tune_config

    device = device or next(policy.parameters()).device
    policy.to(device)
    ref.to(device).eval().requires_grad_(False)
    rm.to(device).eval().requires_grad_(False)
    precision = choose_precision(device)
    opt_cfg = fine_tune_config(TrainConfig(), lr=c.grpo_lr, max_steps=c.grpo_iterations,
                               batch_size=c.grpo_minibatch_size, weight_decay=0.0)
    optimizer = configure_optimizer(policy, opt_cfg)
    scaler = grad_scaler(device, precision)
    gen = torch.Generator(device=device).manual_seed(c.seed)
    rng = random.Random(c.seed)
    history = []
    t0 = time.perf_counter()
    bar = tqdm(total=c.grpo_iterations, desc="GRPO", unit="iter", disable=not progress)
    for it in range(1, c.grpo_iterations + 1):
        batch = [train_items[rng.randrange(len(train_items))] for _ in range(c.grpo_prompts)]
        t_it = time.perf_counter()
        m = grpo_iteration(policy, ref, rm, tok, batch, values, c, pc, optimizer, scaler, precision,
                           device, template, gen)
        history.append({"iteration": it, **m, "seconds": time.perf_counter() - t_it})
        bar.update(1)
        bar.set_postfix(proxy=f"{m['proxy']:.2f}", gold=f"{m['gold']:.2f}", kl=f"{m['kl']:.2f}")
        if callback is not None:
            callback(it, history[-1])
    bar.close()
    policy.eval()
    return {"history": history, "seconds": time.perf_counter() - t0}


def build_grpo(folder: Path, c, pc, sft_cfg, world, tok, sft_model, rm, device=None,
               progress: bool = True, callback: Callable | None = None) -> dict:
    """The recipe of the GRPO run (notebook 08, section 2): policy and reference start as copies
    of ``sft_model``; notebook 06's prompts and reward model; :func:`train_grpo`; saves
    ``model.pt`` and returns the per-iteration ``history``, the wall time and the held-out
    ``final_eval`` (:func:`evaluate`)."""
    from .device import seed_everything
    from .train import save_checkpoint

    seed_everything(c.seed)
    device = device or next(sft_model.parameters()).device
    sets = ppo.prompt_sets(world, sft_cfg, pc)
    values = prefs.relation_values(world)
    policy = copy.deepcopy(sft_model).to(device)
    ref = copy.deepcopy(sft_model).to(device).eval()
    res = train_grpo(policy, ref, copy.deepcopy(rm).to(device), tok, sets["train"], values, c, pc,
                     sft_cfg.template, device, progress, callback)
    final = evaluate(policy, sft_model, rm, tok, sets["eval"], values, sft_cfg.template, pc)
    save_checkpoint(Path(folder) / "model.pt", policy.cpu())
    return {"history": res["history"], "seconds": round(res["seconds"], 2),
            "train_seconds": round(sum(h["seconds"] for h in res["history"]), 2),
            "episodes": c.grpo_iterations * c.grpo_prompts * c.grpo_group, "final_eval": final}


# ============================================================================================
# 3. Iterative (online) DPO
# ============================================================================================


def rm_pairs(items: list[dict], cand: dict, require_stop: bool = True) -> list[dict]:
    """Preference pairs from the policy's own samples, labelled by the reward model: per prompt
    the highest- and the lowest-scoring of its sampled replies (distinct texts; with
    ``require_stop`` only replies that ended their turn; a prompt with fewer than two, or a
    tie, makes no pair). Pairs have the fields DPO reads (``messages``, ``chosen``,
    ``rejected``) and the gold scores of both replies, so the labels can be checked against
    the gold judge."""
    pairs = []
    for i, it in enumerate(items):
        seen: dict = {}
        for k, (t, ok) in enumerate(zip(cand["texts"][i], cand["stopped"][i])):
            if (ok or not require_stop) and t and t not in seen:
                seen[t] = k
        if len(seen) < 2:
            continue
        ks = sorted(seen.values(), key=lambda k: float(cand["proxy"][i, k]))
        lo, hi = ks[0], ks[-1]
        if float(cand["proxy"][i, hi]) == float(cand["proxy"][i, lo]):
            continue
        pairs.append({"category": "on_policy", "kind": it["kind"], "messages": it["messages"],
                      "chosen": cand["texts"][i][hi], "rejected": cand["texts"][i][lo],
                      "gold_chosen": cand["gold"][i][hi], "gold_rejected": cand["gold"][i][lo]})
    return pairs


def label_agreement(pairs: list[dict]) -> dict:
    """Share of pairs whose label agrees with the gold judge (chosen scores strictly higher),
    among the pairs the judge does not tie, with its Wilson interval (:func:`llmlab.ppo.share`)."""
    decided = [p for p in pairs if p["gold_chosen"] != p["gold_rejected"]]
    return ppo.share(sum(p["gold_chosen"] > p["gold_rejected"] for p in decided), len(decided))


def iterative_dpo(policy, ref, rm, tok, train_items: list[dict], eval_items: list[dict], values: dict,
                  c, dc, pc, train_cfg, template: str = "chatml", device=None,
                  progress: bool = True) -> list[dict]:
    """Online DPO (notebook 08, section 3): ``c.idpo_rounds`` rounds, each

    1. sample ``c.idpo_samples`` replies from the *current* policy to ``c.idpo_prompts`` fresh
       training prompts (:func:`sample_candidates`);
    2. label best against worst with the reward model (:func:`rm_pairs`);
    3. ``c.idpo_steps`` steps of DPO (:func:`llmlab.dpo.train_dpo`, notebook 07's loss and
       loop) on them, continuing from the previous round's policy, against the fixed SFT
       reference ``ref`` (so the KL measured is always to SFT);
    4. measure the policy on the held-out prompts (:func:`evaluate`).

    ``policy`` is trained in place. Returns one dict per round: pairs made, their agreement
    with the gold judge, the round's seconds and its ``eval``.
    """
    device = device or next(policy.parameters()).device
    cfg = dpo.dpo_train_config(dataclasses.replace(dc, max_steps=c.idpo_steps,
                                                   eval_every=c.idpo_steps), train_cfg)
    rounds = []
    for r in range(c.idpo_rounds):
        t0 = time.perf_counter()
        items = train_items[r * c.idpo_prompts:(r + 1) * c.idpo_prompts]
        policy.eval()
        cand = sample_candidates(policy, rm, tok, items, values, c.idpo_samples, template,
                                 pc.max_new_tokens, c.seed + r, pc.no_stop_penalty)
        pairs, cut_off = rm_pairs(items, cand), False
        if not pairs:   # a model too small to end its turns (the smoke preset): cut-off replies too
            pairs, cut_off = rm_pairs(items, cand, require_stop=False), True
        t_sample = time.perf_counter() - t0
        if not pairs:
            raise ValueError(f"iterative DPO round {r + 1}: no pair (fewer than two distinct "
                             f"finished replies per prompt)")
        policy.train()
        dpo.train_dpo(policy, ref, pairs, pairs[:2 * dc.batch_size], cfg, tok.pad_id, dc.beta,
                      device=device, progress=progress, tok=tok, template=template)
        t_round = time.perf_counter() - t0
        policy.eval()
        e = evaluate(policy, ref, rm, tok, eval_items, values, template, pc)
        rounds.append({"round": r + 1, "n_prompts": len(items), "n_pairs": len(pairs), "cut_off_pairs": cut_off,
                       "agreement": label_agreement(pairs),
                       "sampled_gold": sum(g for row in cand["gold"] for g in row) / (len(items) * c.idpo_samples),
                       "sample_seconds": round(t_sample, 2), "seconds": round(t_round, 2), "eval": e})
    return rounds


def build_iterative_dpo(folder: Path, c, dc, pc, sft_cfg, train_cfg, world, tok, sft_model, rm,
                        device=None, progress: bool = True) -> dict:
    """The recipe of the iterative DPO run (notebook 08, section 3): :func:`iterative_dpo` from
    the SFT model on notebook 06's training prompts; saves ``model.pt`` (the last round's
    policy) and returns the ``rounds`` and the wall time."""
    from .device import seed_everything
    from .train import save_checkpoint

    seed_everything(c.seed)
    device = device or next(sft_model.parameters()).device
    sets = ppo.prompt_sets(world, sft_cfg, pc)
    need = c.idpo_rounds * c.idpo_prompts
    if len(sets["train"]) < need:
        raise ValueError(f"iterative DPO needs {need} training prompts; the pool has {len(sets['train'])}")
    values = prefs.relation_values(world)
    pool = sets["train"][-need:]       # the end of the pool: rejection sampling uses its start
    policy = copy.deepcopy(sft_model).to(device)
    ref = copy.deepcopy(sft_model).to(device).eval().requires_grad_(False)
    t0 = time.perf_counter()
    rounds = iterative_dpo(policy, ref, rm, tok, pool, sets["eval"], values, c, dc, pc, train_cfg,
                           sft_cfg.template, device, progress)
    save_checkpoint(Path(folder) / "model.pt", policy.cpu())
    return {"rounds": rounds, "steps": c.idpo_rounds * c.idpo_steps,
            "seconds": round(time.perf_counter() - t0, 2),
            "train_seconds": round(sum(r["seconds"] for r in rounds), 2), "final_eval": rounds[-1]["eval"]}


# ============================================================================================
# 4. AI feedback with a constitution
# ============================================================================================

# principle -> the question the AI labeler is asked, and the notebook-05 pair category it judges
CONSTITUTION = {
    "honest": {"principle": "Say you don't know when you don't know.",
               "question": "Which reply is honest about what it does not know?",
               "category": "unknowns"},
    "harmless": {"principle": "Refuse requests to help with harm.",
                 "question": "Which reply refuses the harmful request?", "category": "declines"},
    "concise": {"principle": "Answer without filler.", "question": "Which reply is more concise?",
                "category": "padding"},
    "no_sycophancy": {"principle": "Do not agree with a false premise.",
                      "question": "Which reply corrects the false claim?", "category": "sycophancy"},
}
ANSWERS = ("A", "B")


def judge_messages(question: str, prompt: str, first: str, second: str) -> list[dict]:
    """The comparison put to the AI labeler as one user turn; it answers "A" or "B".

    >>> judge_messages("Which reply is more concise?", "Hi?", "Hello.", "Hello. I hope this helps.")[0]["content"]
    'Which reply is more concise?\\nQuestion: Hi?\\nA: Hello.\\nB: Hello. I hope this helps.\\nAnswer A or B.'
    """
    return [chat.user(f"{question}\nQuestion: {prompt}\nA: {first}\nB: {second}\nAnswer A or B.")]


def choice_prob(logp_a: torch.Tensor, logp_b: torch.Tensor) -> torch.Tensor:
    """P(the labeler answers "A"), renormalised over its two allowed answers:
    ``sigmoid(log p(A) - log p(B))`` (the RLAIF paper's score, Lee et al. 2023, Sec. 2.1).
    (M,), (M,) -> (M,).

    >>> choice_prob(torch.tensor([math.log(0.3)]), torch.tensor([math.log(0.1)]))
    tensor([0.7500])
    """
    return torch.sigmoid(logp_a - logp_b)


def debiased_preference(p_first_as_a: torch.Tensor, p_first_as_b: torch.Tensor) -> torch.Tensor:
    """P(the first reply is better), averaged over both orders to cancel position bias (Lee et
    al. 2023, Sec. 2.1.1): ``(P(A | first shown as A) + 1 - P(A | first shown as B)) / 2``.
    A labeler that always says "A" lands on exactly 0.5. (M,), (M,) -> (M,).

    >>> debiased_preference(torch.tensor([0.9, 0.8]), torch.tensor([0.9, 0.3]))
    tensor([0.5000, 0.7500])
    """
    return 0.5 * (p_first_as_a + 1.0 - p_first_as_b)


@torch.no_grad()
def answer_logprobs(model, tok, conversations: list[list[dict]], template: str,
                    answers=ANSWERS) -> tuple[torch.Tensor, list[bool]]:
    """log p(answer | conversation) of each allowed answer as the assistant's whole reply (its
    stop token included), by :func:`llmlab.dpo.reply_logprobs`. Returns (M, len(answers)) and,
    per conversation, whether it was cut: one longer than the model's context loses its first
    tokens (the judge then reads the end of the question, both replies and the instruction)."""
    block = model.config.block_size
    seqs, cut = [], []
    for conv in conversations:
        for a in answers:
            ids, mask = chat.tokenize_chat(list(conv) + [chat.assistant(a)], tok, template)
            last = max(i for i, v in enumerate(mask) if v)
            ids, mask = ids[:last + 1], mask[:last + 1]
            drop = max(0, len(ids) - block)
            seqs.append(dpo.reply_example(ids[drop:], mask[drop:]))
        cut.append(drop > 0)
    lps = dpo.reply_logprobs(model, seqs, tok.pad_id)
    return torch.tensor(lps).view(len(conversations), len(answers)), cut


def ai_preferences(model, tok, pairs: list[dict], template: str) -> list[dict]:
    """The AI labeler on notebook-05 pairs: each pair's ``chosen`` shown first and second under
    its category's principle (:data:`CONSTITUTION`), :func:`choice_prob` in both orders and
    :func:`debiased_preference`. Returns one record per pair: ``{"pair", "principle",
    "p_first" (P("chosen" is better)), "p_a_first", "p_a_second", "cut"}`` (``cut``: the
    comparison was too long for the context and lost its first tokens)."""
    by_cat = {v["category"]: k for k, v in CONSTITUTION.items()}
    convs = []
    for p in pairs:
        q = CONSTITUTION[by_cat[p["category"]]]["question"]
        prompt = p["messages"][-1]["content"]
        convs.append(judge_messages(q, prompt, p["chosen"], p["rejected"]))
        convs.append(judge_messages(q, prompt, p["rejected"], p["chosen"]))
    lp, cut = answer_logprobs(model, tok, convs, template)                     # (2M, 2)
    pa = choice_prob(lp[:, 0], lp[:, 1])                                       # (2M,)
    out = []
    for i, p in enumerate(pairs):
        a1, a2 = pa[2 * i], pa[2 * i + 1]
        out.append({"pair": p, "principle": by_cat[p["category"]],
                    "p_first": float(debiased_preference(a1, a2)),
                    "p_a_first": float(a1), "p_a_second": float(a2),
                    "cut": cut[2 * i] or cut[2 * i + 1]})
    return out


def ai_labelled(records: list[dict], seed: int = 0) -> list[dict]:
    """The pairs relabelled by the AI labeler: chosen and rejected swapped where it prefers the
    rejected reply (``p_first < 0.5``); an exact tie is a coin flip."""
    rng = random.Random(seed)
    out = []
    for r in records:
        p = r["pair"]
        keep = r["p_first"] > 0.5 or (r["p_first"] == 0.5 and rng.random() < 0.5)
        out.append(p if keep else {**p, "chosen": p["rejected"], "rejected": p["chosen"],
                                   "gold_chosen": p["gold_rejected"], "gold_rejected": p["gold_chosen"]})
    return out


def constitution_pairs(train_pairs: list[dict], per_principle: int) -> list[dict]:
    """The first ``per_principle`` notebook-05 training pairs of each principle's category."""
    out = []
    for v in CONSTITUTION.values():
        out += [p for p in train_pairs if p["category"] == v["category"]][:per_principle]
    return out


def build_rlaif(folder: Path, c, dc, pc, sft_cfg, train_cfg, world, tok, prefs_data: dict, sft_model,
                rm, device=None, progress: bool = True) -> dict:
    """The recipe of section 4: the SFT model labels ``c.ai_pairs`` notebook-05 pairs per
    principle (:func:`ai_preferences`), then two DPO runs from the SFT model with notebook 07's
    settings, one on the AI labels and one on the annotator labels of the same pairs (notebook
    05's noisy gold-judge labels); saves ``model_ai.pt`` and ``model_annotator.pt`` and returns
    the labels' agreement with the gold judge and both runs' held-out evaluations."""
    from .device import seed_everything
    from .train import save_checkpoint

    seed_everything(c.seed)
    device = device or next(sft_model.parameters()).device
    values = prefs.relation_values(world)
    sets = ppo.prompt_sets(world, sft_cfg, pc)
    pairs = constitution_pairs(prefs_data["train"], c.ai_pairs)
    t0 = time.perf_counter()
    records = ai_preferences(sft_model, tok, pairs, sft_cfg.template)
    label_seconds = time.perf_counter() - t0
    ai = ai_labelled(records, c.seed)
    human = [r["pair"] for r in records]
    cfg = dpo.dpo_train_config(dc, train_cfg)
    runs = {}
    for name, data in (("ai", ai), ("annotator", human)):
        seed_everything(dc.seed)
        policy = copy.deepcopy(sft_model).train()
        ref = copy.deepcopy(sft_model).eval().requires_grad_(False)
        t1 = time.perf_counter()
        dpo.train_dpo(policy, ref, data, data[:2 * dc.batch_size], cfg, tok.pad_id, dc.beta,
                      device=device, progress=progress, tok=tok, template=sft_cfg.template)
        secs = time.perf_counter() - t1
        policy.eval()
        runs[name] = {"train_seconds": round(secs, 2),
                      "final_eval": evaluate(policy, sft_model, rm, tok, sets["eval"], values,
                                             sft_cfg.template, pc)}
        save_checkpoint(Path(folder) / f"model_{name}.pt", policy.cpu())
    labels = [{"principle": r["principle"], "p_first": round(r["p_first"], 4),
               "p_a_first": round(r["p_a_first"], 4), "p_a_second": round(r["p_a_second"], 4), "cut": r["cut"],
               "gold_chosen": r["pair"]["gold_chosen"], "gold_rejected": r["pair"]["gold_rejected"],
               "prompt": r["pair"]["messages"][-1]["content"], "chosen": r["pair"]["chosen"],
               "rejected": r["pair"]["rejected"]} for r in records]
    return {"n_pairs": len(pairs), "n_labelled": len(records), "label_seconds": round(label_seconds, 2),
            "labels": labels, "runs": runs}


# --- the supervised half of Constitutional AI: critique and revision ------------------------

# the principle each prompt kind is revised under (Bai et al. sample one at random per step; here
# the one that fits the prompt, the most favourable choice for the model)
KIND_PRINCIPLE = {"unknown": "honest", "decline": "harmless", "premise": "no_sycophancy", "fact": "concise"}
CRITIQUE_REQUEST = "Critique your reply: {principle}"
REVISION_REQUEST = "Critique: {critique}\nRewrite your reply to follow: {principle}"
CAI_SL_HYPERPARAMETERS = RFT_HYPERPARAMETERS[1:] + ("cai_prompts", "constitution")


def critique_messages(prompt: str, reply: str, principle: str) -> list[dict]:
    """Step 2 of Constitutional AI's supervised phase (Bai et al. 2022, Sec. 3.1): the
    conversation so far, then a request to critique the reply under a principle.

    >>> [m["role"] for m in critique_messages("Hi?", "Hello.", "Be brief.")]
    ['user', 'assistant', 'user']
    """
    return [chat.user(prompt), chat.assistant(reply),
            chat.user(CRITIQUE_REQUEST.format(principle=principle))]


def revision_messages(prompt: str, reply: str, principle: str, critique: str) -> list[dict]:
    """Step 3: the conversation, then the model's critique and a request to rewrite the reply
    under the same principle, in one user turn (the paper keeps the critique request as a turn of
    its own; at a context of a few hundred characters there is no room for it). The model's
    answer is the revision.

    >>> revision_messages("Hi?", "Hello.", "Be brief.", "Fine.")[-1]["content"]
    'Critique: Fine.\\nRewrite your reply to follow: Be brief.'
    """
    return [chat.user(prompt), chat.assistant(reply),
            chat.user(REVISION_REQUEST.format(critique=critique, principle=principle))]


def _fits(items: list[dict], tok, template: str, limit: int) -> list[bool]:
    return [len(p) <= limit for p in ppo.prompt_ids(items, tok, template)]


def critique_revise(model, tok, items: list[dict], values: dict, template: str, max_new_tokens: int,
                    seed: int = 0) -> list[dict]:
    """Constitutional AI's supervised data, written by ``model`` itself: for each prompt item
    (1) a sampled reply, (2) a sampled critique of it under the principle of the item's kind
    (:data:`KIND_PRINCIPLE`, :data:`CONSTITUTION`; at most half ``max_new_tokens``), (3) a
    sampled revision given the critique.
    Every step is :func:`llmlab.ppo.rollout` at temperature 1. A prompt whose critique or
    revision request would leave no room for ``max_new_tokens`` in the context is skipped
    (``"fits": False``). The gold judge scores the reply and the revision (logged, never used to
    select). Returns one record per item."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    limit = model.config.block_size - max_new_tokens
    first = ppo.rollout(model, tok, items, template, max_new_tokens, gen)
    principles = [CONSTITUTION[KIND_PRINCIPLE[it["kind"]]]["principle"] for it in items]
    prompts = [it["messages"][-1]["content"] for it in items]
    crit_items = [{"kind": it["kind"], "messages": critique_messages(p, r, pr)}
                  for it, p, r, pr in zip(items, prompts, first.texts, principles)]
    ok = _fits(crit_items, tok, template, limit)
    crit_texts = [""] * len(items)
    sel = [i for i, f in enumerate(ok) if f]
    if sel:   # a short critique: half the reply length, to leave the revision room in the context
        ro = ppo.rollout(model, tok, [crit_items[i] for i in sel], template, max(1, max_new_tokens // 2), gen)
        for i, t in zip(sel, ro.texts):
            crit_texts[i] = t
    rev_items = [{"kind": it["kind"], "messages": revision_messages(p, r, pr, ct)}
                 for it, p, r, pr, ct in zip(items, prompts, first.texts, principles, crit_texts)]
    ok = [a and b for a, b in zip(ok, _fits(rev_items, tok, template, limit))]
    sel = [i for i, f in enumerate(ok) if f]
    revs, rev_stopped = [""] * len(items), [False] * len(items)
    if sel:
        ro = ppo.rollout(model, tok, [rev_items[i] for i in sel], template, max_new_tokens, gen)
        for i, t, st in zip(sel, ro.texts, ro.stopped.tolist()):
            revs[i], rev_stopped[i] = t, bool(st)
    out = []
    for i, it in enumerate(items):
        out.append({"prompt": prompts[i], "kind": it["kind"], "principle": KIND_PRINCIPLE[it["kind"]],
                    "fits": ok[i], "reply": first.texts[i], "critique": crit_texts[i],
                    "revision": revs[i], "revision_stopped": rev_stopped[i],
                    "gold_reply": prefs.gold_score(it, first.texts[i], values).score,
                    "gold_revision": prefs.gold_score(it, revs[i], values).score if ok[i] else None,
                    "messages": it["messages"]})
    return out


def revision_examples(records: list[dict]) -> list[dict]:
    """The SFT data of the supervised phase: each prompt with its revision as the reply, for the
    revisions that fit the context, say something and ended their turn (SFT would otherwise
    teach a cut-off reply)."""
    return [{"messages": list(r["messages"]) + [chat.assistant(r["revision"])], "kind": r["kind"]}
            for r in records if r["fits"] and r["revision"].strip() and r["revision_stopped"]]


def build_cai_sl(folder: Path, c, pc, sft_cfg, train_cfg, world, tok, sft_model, rm, device=None,
                 progress: bool = True) -> dict:
    """The recipe of section 4's supervised half: :func:`critique_revise` on ``c.cai_prompts``
    training-split prompts (notebook 06's pool) by the SFT model, then SFT's loss on the
    revisions (:func:`revision_examples`, :func:`train_rft`'s settings) from the SFT model; saves
    ``model.pt`` and returns the records, the counts, wall times and the held-out ``final_eval``."""
    from .device import seed_everything
    from .train import save_checkpoint

    seed_everything(c.seed)
    device = device or next(sft_model.parameters()).device
    sets = ppo.prompt_sets(world, sft_cfg, pc)
    values = prefs.relation_values(world)
    items = sets["train"][:c.cai_prompts]
    t0 = time.perf_counter()
    records = critique_revise(sft_model, tok, items, values, sft_cfg.template, pc.max_new_tokens, c.seed)
    t_write = time.perf_counter() - t0
    examples = revision_examples(records)
    policy = copy.deepcopy(sft_model).train()
    t_train, final = 0.0, None
    if examples:
        t1 = time.perf_counter()
        train_rft(policy, examples, tok, c, train_cfg, sft_cfg.template, device, progress)
        t_train = time.perf_counter() - t1
    policy.eval()
    final = evaluate(policy, sft_model, rm, tok, sets["eval"], values, sft_cfg.template, pc)
    save_checkpoint(Path(folder) / "model.pt", policy.cpu())
    for r in records:
        r.pop("messages")
    return {"n_prompts": len(items), "n_fit": sum(r["fits"] for r in records), "n_examples": len(examples),
            "records": records, "write_seconds": round(t_write, 2), "train_seconds": round(t_train, 2),
            "seconds": round(t_write + t_train, 2), "final_eval": final}


def agreement_by_principle(labels: list[dict]) -> dict:
    """Per principle: how often the AI label and notebook 05's annotator label agree with the
    gold judge (``{"ai", "annotator"}``, each :func:`llmlab.ppo.share`), and the labeler's mean
    P("A") in each order (its position bias: 0.5 when it has none).

    A label agrees when it prefers the reply the gold judge scores higher; ``gold_chosen`` is
    the gold score of notebook 05's chosen reply, shown first in ``p_first``; an exact tie
    of the labeler counts as a disagreement.
    """
    out = {}
    for name in CONSTITUTION:
        rows = [r for r in labels if r["principle"] == name and r["gold_chosen"] != r["gold_rejected"]]
        gold_first = [r["gold_chosen"] > r["gold_rejected"] for r in rows]
        ai_ok = sum(r["p_first"] != 0.5 and (r["p_first"] > 0.5) == g for r, g in zip(rows, gold_first))
        out[name] = {"ai": ppo.share(ai_ok, len(rows)), "annotator": ppo.share(sum(gold_first), len(rows)),
                     "p_a": (sum(r["p_a_first"] + r["p_a_second"] for r in rows) / (2 * len(rows))
                             if rows else float("nan"))}
    return out
