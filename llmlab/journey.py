"""The whole pipeline (notebook 09): one model's journey through every stage, from the runs.

Nothing here trains. Every stage of notebooks 02-07 saved its history with its artifact (the
pretraining losses in ``train_log.json``, SFT's losses and the pretraining loss before and
after it, the reward model's held-out accuracy, PPO's per-iteration rewards and KL, DPO's
held-out margins), and the models themselves. This module turns them into the series' closing
pictures:

1. **Training dynamics across the stages** (:func:`dynamics`, :func:`plot_dynamics`): one
   figure, one panel per stage, from the logged histories.
2. **One model's journey** (:func:`journey_examples`, :func:`behaviour_table`): the base, SFT,
   PPO and DPO models measured by the same function on the same held-out prompts
   (:func:`llmlab.beyond.evaluate`, notebook 06's settings), side by side.
3. **The pipeline at a glance, measured** (:func:`stage_rows`): data, steps, wall time, models in
   memory and their bytes per stage, beside the real-world scale of each stage
   (:data:`REAL_WORLD`) and what it would cost at 7B parameters (:func:`cost_at_scale`, from
   the Chinchilla law of notebook 03 and the 6ND rule).

Stage modules stay downstream: this one reads earlier stages' results, never
:mod:`llmlab.stages` (the notebook passes the artifacts in).
"""
from __future__ import annotations

import math

from . import ppo, prefs, scaling

MODELS = ("base", "SFT", "PPO", "DPO")
KINDS = ("fact", "unknown", "decline", "premise")
KIND_NAMES = {"fact": "a fact question", "unknown": "an entity that does not exist",
              "decline": "a request to decline", "premise": "a false premise"}


# --- 1. training dynamics -------------------------------------------------------------------


def dynamics(base_log: dict, sft_info: dict, reward_info: dict, ppo_info: dict, dpo_info: dict) -> dict:
    """The series of the closing figure, read from the stages' logged histories (pure).

    - ``pretrain``: training loss per step and held-out loss per evaluation against tokens seen
      (tokens per step = the run's tokens / steps);
    - ``sft``: training loss per step, held-out loss per evaluation, and the pretraining
      held-out loss before and after SFT (the forgetting check);
    - ``reward``: held-out pair accuracy per evaluation;
    - ``ppo``: per iteration the proxy (reward-model) and gold reward of the iteration's own
      samples and their KL to the reference;
    - ``dpo``: per held-out evaluation the implicit-reward margin and accuracy.

    >>> d = dynamics({"steps": 2, "tokens": 8, "train_losses": [5.0, 4.0], "val_losses": [[2, 4.1]]},
    ...              {"train_losses": [3.0], "val_losses": [[1, 2.9]], "pretrain_val_before": 4.1,
    ...               "pretrain_val_after": 4.3}, {"curve": [[10, 0.6, 0.1]]},
    ...              {"history": [{"iteration": 1, "proxy": 0.1, "gold": 0.2, "kl": 0.0}]},
    ...              {"curve": [{"step": 0, "margin": 0.0, "accuracy": 0.0}]})
    >>> d["pretrain"]["train_tokens"], d["pretrain"]["val_tokens"], d["sft"]["forgetting"]
    ([4.0, 8.0], [8.0], (4.1, 4.3))
    """
    per_step = base_log["tokens"] / max(base_log["steps"], 1)
    tl = base_log["train_losses"]
    return {
        "pretrain": {"train_tokens": [per_step * (i + 1) for i in range(len(tl))], "train_loss": list(tl),
                     "val_tokens": [per_step * s for s, _ in base_log["val_losses"]],
                     "val_loss": [v for _, v in base_log["val_losses"]]},
        "sft": {"train_step": list(range(1, len(sft_info["train_losses"]) + 1)),
                "train_loss": list(sft_info["train_losses"]),
                "val_step": [s for s, _ in sft_info["val_losses"]],
                "val_loss": [v for _, v in sft_info["val_losses"]],
                "forgetting": (sft_info["pretrain_val_before"], sft_info["pretrain_val_after"])},
        "reward": {"step": [c[0] for c in reward_info["curve"]], "accuracy": [c[1] for c in reward_info["curve"]]},
        "ppo": {"iteration": [h["iteration"] for h in ppo_info["history"]],
                "proxy": [h["proxy"] for h in ppo_info["history"]],
                "gold": [h["gold"] for h in ppo_info["history"]],
                "kl": [h["kl"] for h in ppo_info["history"]]},
        "dpo": {"step": [c["step"] for c in dpo_info["curve"]], "margin": [c["margin"] for c in dpo_info["curve"]],
                "accuracy": [c["accuracy"] for c in dpo_info["curve"]]},
    }


def plot_dynamics(d: dict, vocab_size: int | None = None):
    """The closing figure: pretraining, SFT, and alignment (PPO's rewards and KL, DPO's
    implicit-reward margin), one panel each, from :func:`dynamics`. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11.0, 7.0))
    ax = axes.ravel()
    p = d["pretrain"]
    ax[0].plot(p["train_tokens"], p["train_loss"], lw=0.8, alpha=0.7, label="train")
    ax[0].plot(p["val_tokens"], p["val_loss"], "o-", ms=3, label="held out")
    if vocab_size:
        ax[0].axhline(math.log(vocab_size), ls=":", c="grey", lw=1, label="ln V (uniform guess)")
    ax[0].set(title="1. Pretraining", xlabel="tokens seen", ylabel="loss (nats per token)")
    s = d["sft"]
    ax[1].plot(s["train_step"], s["train_loss"], lw=0.8, alpha=0.7, label="SFT train (replies)")
    ax[1].plot(s["val_step"], s["val_loss"], "o-", ms=3, label="SFT held out")
    before, after = s["forgetting"]
    ax[1].axhline(before, ls=":", c="C2", lw=1, label=f"pretraining held-out loss before ({before:.2f})")
    ax[1].axhline(after, ls="--", c="C3", lw=1, label=f"... after SFT ({after:.2f})")
    ax[1].set(title="2. Supervised fine-tuning", xlabel="optimiser step", ylabel="loss (nats per token)")
    q = d["ppo"]
    # the two rewards are on different scales (the RM's includes a summed log-likelihood), so
    # each is drawn as its change since the first rollout
    ax[2].plot(q["iteration"], [x - q["proxy"][0] for x in q["proxy"]], "s--", ms=3,
               label="proxy (reward model)")
    ax[2].plot(q["iteration"], [x - q["gold"][0] for x in q["gold"]], "o-", ms=3, label="gold judge")
    ax[2].axhline(0, c="grey", lw=0.8)
    ax[2].set(title="3a. PPO: reward of each rollout", xlabel="PPO iteration",
              ylabel="change since the first rollout")
    kl_ax = ax[2].twinx()
    kl_ax.plot(q["iteration"], q["kl"], "^:", ms=3, c="C3", label="KL to SFT (right axis)")
    kl_ax.set_ylabel("KL per reply (nats)")
    kl_ax.grid(False)
    h1, l1 = ax[2].get_legend_handles_labels()
    h2, l2 = kl_ax.get_legend_handles_labels()
    ax[2].legend(h1 + h2, l1 + l2, fontsize=7)
    o = d["dpo"]
    ax[3].plot(o["step"], o["margin"], "o-", ms=3, label="implicit-reward margin")
    ax[3].set(title="3b. DPO on held-out pairs", xlabel="optimiser step",
              ylabel="beta log-ratio margin, chosen - rejected")
    acc_ax = ax[3].twinx()
    acc_ax.plot(o["step"], o["accuracy"], "^:", ms=3, c="C3", label="implicit-reward accuracy (right axis)")
    acc_ax.set(ylabel="share of pairs ranked right", ylim=(0, 1))
    acc_ax.grid(False)
    h1, l1 = ax[3].get_legend_handles_labels()
    h2, l2 = acc_ax.get_legend_handles_labels()
    ax[3].legend(h1 + h2, l1 + l2, fontsize=7)
    for a in ax[:2]:
        a.legend(fontsize=7)
    return fig


# --- 2. one model's journey -------------------------------------------------------------------


def journey_examples(evals: dict, kinds=KINDS) -> list[dict]:
    """For each prompt kind, the first held-out prompt of that kind and every model's sampled
    reply to it with its gold score: ``[{"kind", "prompt", model: (text, gold)}]``.

    ``evals`` maps a model's name to its :func:`llmlab.beyond.evaluate` result (replies kept),
    all measured on the same prompts in the same order.

    >>> e = lambda t, g: {"replies": [{"kind": "fact", "prompt": "Q?", "text": t, "gold": g}]}
    >>> journey_examples({"SFT": e("A.", 2.0), "PPO": e("B.", -2.0)}, kinds=("fact",))
    [{'kind': 'fact', 'prompt': 'Q?', 'SFT': ('A.', 2.0), 'PPO': ('B.', -2.0)}]
    """
    names = list(evals)
    first = evals[names[0]]["replies"]
    for n in names[1:]:
        if [r["prompt"] for r in evals[n]["replies"]] != [r["prompt"] for r in first]:
            raise ValueError(f"{n}'s evaluation asked other prompts than {names[0]}'s; "
                             "measure every model on the same items in the same order")
    rows = []
    for kind in kinds:
        idx = next((i for i, r in enumerate(first) if r["kind"] == kind), None)
        if idx is None:
            continue
        rows.append({"kind": kind, "prompt": first[idx]["prompt"],
                     **{n: (evals[n]["replies"][idx]["text"], evals[n]["replies"][idx]["gold"]) for n in names}})
    return rows


BEHAVIOUR_COLUMNS = {   # column: (key of the evaluation's shares, what it counts)
    "ends its turn (format)": ("stopped", "replies that emit the end-of-turn token"),
    "right fact": ("factual", "fact questions answered with the world's value"),
    "\"I don't know\"": ("idk", "unknown entities met with \"I don't know\""),
    "refuses": ("refusal", "decline requests refused"),
    "corrects premise": ("premise_corrected", "false premises corrected with the true value"),
}


def behaviour_table(evals: dict) -> dict:
    """``{model: {column: text}}``: gold reward with its interval, the behaviour shares of
    :data:`BEHAVIOUR_COLUMNS` with n and Wilson intervals, the shares of *all* replies that open
    with "I don't know" or a refusal whatever the prompt (:func:`opens_with`, from the kept
    replies), mean reply length and KL to SFT."""
    out = {}
    for name, e in evals.items():
        row = {"gold reward": f"{e['gold']:+.2f} ({e['gold_ci'][0]:+.2f} to {e['gold_ci'][1]:+.2f})"}
        for col, (key, _) in BEHAVIOUR_COLUMNS.items():
            row[col] = ppo.fmt_share(e["shares"][key])
        for what in OPENINGS if "replies" in e else ():
            row[f"opens with {what} (any prompt)"] = ppo.fmt_share(opens_with(e, what))
        row["mean length (chars)"] = round(e["length"], 1)
        row["KL to SFT (nats)"] = round(e["kl"], 2)
        out[name] = row
    return out


OPENINGS = {   # name: test of a reply's first sentence, counted over every prompt kind
    "I don't know": prefs.is_idk,
    "a refusal": prefs.is_refusal,
}


def opens_with(e: dict, what: str, kinds=None) -> dict:
    """The share of an evaluation's replies, over *every* prompt kind, whose first sentence is
    ``what`` (a key of :data:`OPENINGS`), as :func:`llmlab.ppo.share`. "I don't know" is right
    on an unknown entity and a refusal on a decline request; on the other kinds both are a
    blanket answer the judge scores below the right reply, so a policy that learns one
    everywhere shows here.

    ``kinds`` (a tuple of prompt kinds) counts only the replies to prompts of those kinds.

    >>> e = {"replies": [{"text": "I don't know. I have never heard of X.", "kind": "unknown"},
    ...                  {"text": "Paris.", "kind": "fact"},
    ...                  {"text": "Sorry, I can't help with that.", "kind": "fact"}]}
    >>> opens_with(e, "I don't know")["k"], opens_with(e, "a refusal")["k"]
    (1, 1)
    >>> {k: v for k, v in opens_with(e, "a refusal", kinds=("fact",)).items() if k in ("rate", "k", "n")}
    {'rate': 0.5, 'k': 1, 'n': 2}
    """
    test = OPENINGS[what]
    rows = [(j, r) for j, r in enumerate(e["replies"]) if kinds is None or r["kind"] in kinds]
    groups: dict = {}                 # per prompt (several sampled replies each): (hits, replies)
    for j, r in rows:
        g = groups.setdefault(ppo.prompt_key(r) if "prompt" in r else j, [0, 0])
        g[0] += bool(test((prefs.sentences(r["text"]) or [""])[0]))
        g[1] += 1
    return ppo.share(sum(g[0] for g in groups.values()), len(rows), [tuple(g) for g in groups.values()])


def moved(a: dict, b: dict) -> dict:
    """Which behaviour shares changed from evaluation ``a`` to ``b`` beyond their intervals:
    ``{key: "up" | "down" | "within noise"}``, by :func:`llmlab.ppo.share_difference` on
    the two counts (an interval of the difference that excludes 0).

    >>> s = lambda k, n: {"shares": {"idk": {"k": k, "n": n}}}
    >>> moved(s(2, 40, ), s(30, 40))["idk"], moved(s(20, 40), s(22, 40))["idk"]
    ('up', 'within noise')
    """
    out = {}
    for key in a["shares"]:
        x, y = a["shares"][key], b["shares"][key]
        if not x["n"] or not y["n"]:
            out[key] = "not measured"
            continue
        lo, hi = ppo.share_difference(y, x)
        out[key] = "up" if lo > 0 else "down" if hi < 0 else "within noise"
    return out


# --- 3. the pipeline at a glance --------------------------------------------------------------

# The seed's real-world scale of each stage (public descriptions of models at each stage).
REAL_WORLD = {
    "pretraining": {"data": "trillions of tokens of filtered web text (Llama 2: 2T; Llama 3: 15T)",
                    "examples": "GPT-3, Llama 2, Llama 3 base models"},
    "SFT": {"data": "1K-1M instruction-response examples (LIMA: 1K; Llama 2: about 28K)",
            "examples": "InstructGPT's SFT model, Llama 2-Chat SFT, Alpaca"},
    "reward model": {"data": "10K-100K+ human comparisons (InstructGPT: about 33K prompts, "
                             "Llama 2: about 1.4M comparisons)",
                     "examples": "InstructGPT's 6B reward model, Llama 2's helpfulness and safety RMs"},
    "PPO": {"data": "about 1K-10K+ RL prompts, sampled many times (InstructGPT: about 31K)",
            "examples": "InstructGPT, ChatGPT, Llama 2-Chat"},
    "DPO": {"data": "the same comparisons as a reward model (Zephyr: about 64K pairs)",
            "examples": "Zephyr, Tulu 2, Llama 3's post-training"},
}

# Assumed sizes of one training example at scale, for the 7B cost column (tokens).
TOKENS_PER_EXAMPLE = {"SFT": 1_000, "reward model": 2 * 1_000, "PPO": 500, "DPO": 2 * 1_000}
SCALE_EXAMPLES = {"SFT": 100_000, "reward model": 100_000, "PPO": 10_000 * 10, "DPO": 100_000}


def optimal_tokens(n_params: float, law: scaling.ScalingLaw = scaling.EPOCH) -> float:
    """The compute-optimal number of training tokens for ``n_params`` under ``law``: invert
    N_opt = G (C/6)^a for C, then D = C / 6N (notebook 03's calculator, run backwards).

    The default is Epoch AI's refit of Chinchilla's data: the parameters Hoffmann et al.
    published for their Approach 3 imply about three times more tokens per parameter than the
    paper's own Approaches 1 and 2 (Besiroglu et al. 2024 traced this to the published fit):

    >>> round(optimal_tokens(7e9) / 7e9, 1), round(optimal_tokens(7e9, scaling.CHINCHILLA) / 7e9, 1)
    (20.6, 66.8)
    """
    c6 = (n_params / law.G) ** (1.0 / law.a)
    return c6 / n_params


def cost_at_scale(n_params: float = 7e9, gpu: str = "H100", mfu: float = 0.4,
                  law: scaling.ScalingLaw = scaling.EPOCH) -> dict:
    """What each stage would cost for an ``n_params`` model: ``{stage: {"tokens", "flops",
    "gpu_days"}}``. Pretraining trains on ``law``'s compute-optimal tokens (:func:`optimal_tokens`);
    the others on :data:`SCALE_EXAMPLES` examples of :data:`TOKENS_PER_EXAMPLE` tokens.

    FLOPs per token: 6N for a trained model's forward and backward (the 6ND rule), 2N for a
    forward pass of a frozen model. SFT and the reward model: 6N. DPO: 6N for the policy plus
    2N for the reference. PPO per sampled token: 2N to generate, 2N each for the reference and
    the reward model, and 2 epochs x 6N for the policy and for the value model.
    """
    n = n_params
    per_token = {"pretraining": 6 * n, "SFT": 6 * n, "reward model": 6 * n, "DPO": 6 * n + 2 * n,
                 "PPO": 2 * n + 2 * n + 2 * n + 2 * (6 * n + 6 * n)}
    tokens = {"pretraining": optimal_tokens(n, law)}
    tokens |= {k: SCALE_EXAMPLES[k] * TOKENS_PER_EXAMPLE[k] for k in SCALE_EXAMPLES}
    return {k: {"tokens": tokens[k], "flops": per_token[k] * tokens[k],
                "gpu_days": scaling.gpu_days(per_token[k] * tokens[k], gpu, mfu)} for k in per_token}


def human(x: float) -> str:
    """A count in words a reader takes in at a glance.

    >>> human(1.4e11), human(32_000), human(950)
    ('140B', '32K', '950')
    """
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            v = x / div
            return f"{v:.0f}{unit}" if v >= 10 else f"{v:.1f}{unit}"
    return f"{x:.0f}"


def stage_rows(base_log: dict, sft_info: dict, reward_info: dict, ppo_info: dict, dpo_info: dict,
               memory: dict) -> dict:
    """``{stage: {"data", "steps", "seconds", "models held", "state MB"}}`` of this run, from
    the artifacts' info (pure). ``memory`` maps a stage to :func:`llmlab.dpo.state_memory`'s
    result for the models that stage held while it trained."""
    cfg = ppo_info["config"]
    episodes = cfg["batch_size"] * len(ppo_info["history"])
    rows = {
        "pretraining": {"data": f"{human(base_log['tokens'])} tokens", "steps": base_log["steps"],
                        "seconds": base_log["wall_seconds"]},
        "SFT": {"data": f"{human(sft_info['n_train'])} conversations", "steps": len(sft_info["train_losses"]),
                "seconds": sft_info["sft_seconds"]},
        "reward model": {"data": f"{human(reward_info['n_train'])} comparisons", "steps": reward_info["steps"],
                         "seconds": reward_info["train_seconds"]},
        "PPO": {"data": f"{human(episodes)} sampled replies ({human(cfg['n_prompts'])} prompts in the pool)",
                "steps": len(ppo_info["history"]), "seconds": ppo_info["seconds"]},
        "DPO": {"data": f"{human(dpo_info['n_train'])} comparisons", "steps": dpo_info["steps"],
                "seconds": dpo_info["train_seconds"]},
    }
    for k, r in rows.items():
        m = memory[k]
        r["models held (trained)"] = f"{m['models']} ({m['trained']})"
        r["state MB"] = round(m["total"] / 1e6, 1)
        r["seconds"] = round(float(r["seconds"]), 1)
    return rows
