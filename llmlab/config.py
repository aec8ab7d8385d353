"""Every size in the series, in one place: one config dataclass per stage and three presets.

Presets
-------
``smoke``  every notebook in seconds; what CI runs.
``cpu``    the default on a laptop: the whole series in minutes on 2 cores, big enough that
           every stage shows its effect in measured numbers.
``gpu``    Colab T4 and up: a bigger world and bigger models.

Pick one with the ``LLMLAB_PRESET`` environment variable; without it, ``gpu`` is chosen where
CUDA is present and ``cpu`` elsewhere (see :func:`get_preset`). Notebook 00, "How to use the
series", explains the choice.

Each stage module takes only its own config (``build_world(cfg.world)``, ``train(cfg.train)``),
so a reader can find every knob of a stage in one dataclass below.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field

PRESET_ENV = "LLMLAB_PRESET"


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic world (``llmlab.world``): its knowledge base and its crawl of the web."""

    seed: int = 1234                  # seeds the knowledge base and every page; same seed, same bytes
    n_countries: int = 30             # countries, each with a capital, language, climate and export
    n_people: int = 64                # people, each born in a country, with a profession and birth year
    n_animals: int = 30               # animals, each with a habitat, diet and colour
    n_inventions: int = 20            # inventions, each with an inventor, year and purpose
    n_unknown: int = 40               # entities that never appear anywhere (for an honest "I don't know")
    heldout_frac: float = 0.1         # share of facts kept out of every page (probes of generalisation)
    zipf_s: float = 1.1               # popularity skew: entity rank r gets weight 1/r^s of the extra pages
    n_stories: int = 700              # short stories (the world's books)
    n_threads: int = 1600             # forum question-and-answer threads
    n_code: int = 40                  # small code snippets
    n_spam: int = 500                 # low-quality pages, spread over the five low-quality kinds
    mirror_frac: float = 0.06         # share of good pages copied exactly to a mirror site
    near_dup_frac: float = 0.08       # share of good pages copied with small edits
    latin1_frac: float = 0.05         # share of pages served as windows-1252 instead of UTF-8


@dataclass(frozen=True)
class DataConfig:
    """The pretraining data pipeline (notebook 01): extraction, dedup, filtering, mix, packing."""

    shingle_n: int = 5                # word n-gram size for near-duplicate shingles
    num_perm: int = 128               # MinHash permutations (signature length)
    lsh_bands: int = 16               # LSH bands b (rows per band r = num_perm / b)
    jaccard_threshold: float = 0.8    # pairs at or above this Jaccard count as near-duplicates
    dedup_confirm: str = "exact"      # confirm LSH candidates by "exact" Jaccard or MinHash "estimate"
    extractor: str = "simple"         # main-text extractor: "simple" (llmlab's) or "trafilatura"
    max_link_density: float = 0.5     # simple extractor: drop blocks with more than this share of link text
    # The four quality thresholds below are what quality.tune_rules picks on the tune half of the
    # cpu crawl (pipeline.split_by_url); notebook 01 scores them on the held-out half.
    min_words: int = 8                # quality: fewer words is too short (Gopher: 50; our threads are short)
    min_stop_words: int = 0           # quality: at least this many Gopher stop words (Gopher: 2)
    max_top_2gram: float = 0.5        # quality: top bigram's share of characters (Gopher: 0.2)
    max_dup_5gram: float = 0.45       # quality: share of characters in repeated 5-grams (Gopher: 0.15)
    use_classifier: bool = False      # also drop documents the fastText-style classifier scores low
    classifier_threshold: float = 0.33  # with use_classifier: drop below this P(reference-like); quality.best_threshold on the tune half of the cpu crawl gives 0.326
    reference_sources: tuple = ("wiki", "books", "forum")  # the classifier's curated (positive) sources (wiki + books alone rejects every forum thread: notebook 01, section 4)
    mix_weights: tuple = ()           # ((source, epochs), ...): 2.0 = each document twice, 0.5 = a random half; unlisted sources 1.0; () = natural mix, every document once
    val_frac: float = 0.05            # share of documents held out for validation
    block_size: int = 128             # packed window length in tokens (must match the model's)


@dataclass(frozen=True)
class TokenizerConfig:
    """Byte-level BPE (notebook 01)."""

    # The world's cleaned text has few distinct words, so BPE runs out of pairs to merge at about
    # 700 merges (smoke), 1250 (cpu) and 2700 (gpu): each vocabulary stays well below its limit.
    vocab_size: int = 1024            # final vocabulary: 256 bytes + merges + special tokens
    split_pattern: str = "gpt4"       # pre-tokenisation regex: "gpt4" (cl100k's) or "gpt2"
    sweep_vocab_sizes: tuple = (384, 512, 768, 1024, 1280)  # vocabularies in notebook 01's compression sweep


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only GPT (notebook 02)."""

    vocab_size: int = 1024            # tokens in the vocabulary (the tokenizer's)
    block_size: int = 128             # longest context in tokens
    n_layer: int = 4                  # transformer blocks
    n_head: int = 4                   # attention heads per block
    n_embd: int = 128                 # width of the residual stream
    dropout: float = 0.0              # dropout on attention and MLP outputs
    bias: bool = True                 # biases in Linear and LayerNorm (GPT-2 has them)
    positions: str = "learned"        # "learned" position table (GPT-2) or "rope" (rotary, modern)


@dataclass(frozen=True)
class TrainConfig:
    """Pretraining (notebook 02): optimiser, schedule and budget."""

    batch_size: int = 32              # sequences per micro-batch
    grad_accum: int = 1               # micro-batches per optimiser step
    max_steps: int = 1500             # optimiser steps
    lr: float = 3e-3                  # peak learning rate
    min_lr_frac: float = 0.1          # cosine floor as a fraction of the peak
    warmup_steps: int = 100           # linear warmup steps
    weight_decay: float = 0.1         # AdamW decay on matrices (not on biases, norms, embeddings)
    grad_clip: float = 1.0            # clip the global gradient norm to this
    eval_every: int = 100             # steps between validation-loss estimates
    eval_batches: int = 10            # batches per validation estimate
    compile: bool = False             # torch.compile the model (worth it on a GPU)
    seed: int = 0                     # seeds init and batch order


@dataclass(frozen=True)
class ScalingConfig:
    """The IsoFLOP sweep (notebook 03)."""

    # budgets and band chosen from a first sweep of every width at 5e10-4e11 on the same fresh
    # text: each budget's minimum lies inside the widths it trains (notebook 03 checks it)
    budgets: tuple = (5e10, 1e11, 2e11, 4e11, 8e11)  # compute budgets C in FLOPs (C = 6 N D per run)
    widths: tuple = (8, 16, 24, 32, 48, 64)  # model-size ladder: n_embd of each model
    tokens_per_param: tuple = (1.0, 200.0)  # (low, high): at each budget train only the widths whose D/N lies inside; () = every width
    val_tokens: int = 65536           # tokens of fresh validation text (sweep_data)
    data_seed: int = 100              # seeds the fresh text's pages (world.iter_pages; validation uses seed + 1)
    n_layer: int = 2                  # depth of every model in the ladder
    head_dim: int = 8                 # channels per attention head (n_head = width / head_dim)
    batch_size: int = 8               # sequences per step (block_size from the preset's model)
    lr: float = 3e-3                  # peak learning rate for every run
    warmup_frac: float = 0.05         # warmup as a share of each run's steps; cosine to its end
    min_steps: int = 40               # a run with fewer steps is not meaningful: an error
    eval_batches: int = 20            # validation batches behind each run's final loss
    seed: int = 0                     # seeds every run's init and batch order
    n_boot: int = 200                 # bootstrap resamples behind the fitted intervals
    threads: int = 2                  # CPU threads while sweeping (0 = leave as is; more threads than cores only waits)


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning (notebook 04)."""

    n_small: int = 1000               # pairs in the small dataset (the LIMA comparison)
    n_large: int = 10000              # pairs in the large dataset (the one the SFT model trains on)
    n_val: int = 200                  # conversations about held-out facts/entities, for the val loss
    eval_frac: float = 0.25           # share of facts, unknown entities, stories and decline requests held out
    template: str = "chatml"          # chat template of training and evaluation: "chatml" or "llama2"
    max_steps: int = 400              # optimiser steps
    batch_size: int = 16              # conversations per step (padded to the longest in the batch)
    lr: float = 3e-4                  # peak learning rate: 10x below pretraining's
    high_lr: float = 3e-3             # the "too high" rate of the forgetting demo (pretraining-sized)
    warmup_steps: int = 20            # linear warmup steps
    weight_decay: float = 0.0         # AdamW decay on matrices (fine-tuning usually uses none)
    eval_every: int = 100             # steps between validation-loss estimates
    eval_batches: int = 5             # batches per validation estimate
    max_story_chars: int = 240        # stories in the summary task are cut to this many characters
    max_new_tokens: int = 40          # longest reply generated when scoring held-out prompts
    seed: int = 0                     # seeds the data, the split and the batch order


@dataclass(frozen=True)
class Preset:
    """A named set of sizes for every stage."""

    name: str
    world: WorldConfig = field(default_factory=WorldConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        world=WorldConfig(n_countries=6, n_people=10, n_animals=6, n_inventions=4, n_unknown=8,
                          n_stories=10, n_threads=24, n_code=6, n_spam=20),
        tokenizer=TokenizerConfig(vocab_size=512, sweep_vocab_sizes=(300, 384, 512, 640)),
        data=DataConfig(block_size=64),
        model=ModelConfig(vocab_size=512, block_size=64, n_layer=1, n_head=2, n_embd=32),
        train=TrainConfig(batch_size=8, max_steps=30, warmup_steps=5, eval_every=10, eval_batches=2),
        scaling=ScalingConfig(budgets=(3e8, 6e8, 1.2e9), widths=(4, 8, 16), tokens_per_param=(),
                              n_layer=1, head_dim=4, batch_size=4, min_steps=10, eval_batches=2,
                              n_boot=20, val_tokens=4096),
        sft=SFTConfig(n_small=50, n_large=200, n_val=20, max_steps=20, batch_size=4,
                      warmup_steps=2, eval_every=10, eval_batches=2, max_story_chars=90,
                      max_new_tokens=20),
    ),
    "cpu": Preset(
        name="cpu",
        # 900 steps x 4,096 tokens (about 20 passes over the cpu corpus): ~3.5 min on 2 idle cores
        train=TrainConfig(max_steps=900, warmup_steps=50, lr=4e-3),
    ),
    "gpu": Preset(
        name="gpu",
        world=WorldConfig(n_countries=120, n_people=300, n_animals=120, n_inventions=80,
                          n_unknown=200, n_stories=2000, n_threads=6000, n_code=300, n_spam=2500),
        tokenizer=TokenizerConfig(vocab_size=2048, sweep_vocab_sizes=(512, 1024, 1536, 2048, 2560)),
        data=DataConfig(block_size=256),
        model=ModelConfig(vocab_size=2048, block_size=256, n_layer=8, n_head=8, n_embd=512),
        train=TrainConfig(batch_size=64, max_steps=4000, lr=1e-3, warmup_steps=200, compile=True),
        scaling=ScalingConfig(budgets=(1e13, 3e13, 1e14), widths=(64, 96, 128, 192, 256),
                              tokens_per_param=(), n_layer=4, batch_size=32),
        sft=SFTConfig(max_steps=1500, batch_size=32, lr=1e-4, high_lr=1e-3, max_story_chars=500),
    ),
}


def get_preset(name: str | None = None) -> Preset:
    """The preset called ``name``; else ``$LLMLAB_PRESET``; else ``gpu`` with CUDA, ``cpu`` without.

    >>> get_preset("smoke").name
    'smoke'
    """
    if name is None:
        name = os.environ.get(PRESET_ENV, "").strip() or None
    if name is None:
        import torch

        name = "gpu" if torch.cuda.is_available() else "cpu"
    key = name.strip().lower()
    if key not in PRESETS:
        valid = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown preset {name!r} (from ${PRESET_ENV} or the argument); "
                         f"valid presets are: {valid}")
    return PRESETS[key]


def config_dict(cfg) -> dict:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def config_hash(*cfgs) -> str:
    """A short stable hash of one or more configs: artifacts record it and rebuild when it changes."""
    blob = json.dumps([config_dict(c) for c in cfgs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- notebook 05: preference pairs and the reward model ------------------------------------
# Appended apart from ``Preset`` while that class is being refactored: each preset's values
# live in PREF_PRESETS / REWARD_PRESETS below and are read with pref_config / reward_config.


@dataclass(frozen=True)
class PrefConfig:
    """Preference pairs labelled by the gold judge (notebook 05, ``llmlab.prefs``)."""

    n_train: int = 16000              # training pairs (prompts from SFT's training split)
    n_val: int = 1000                 # held-out pairs (prompts about held-out facts and entities)
    label_temperature: float = 1.0    # annotator noise T: P(a picked) = sigmoid((g_a - g_b) / T); 0 = none
    train_mix: tuple = (("facts", 0.16), ("unknowns", 0.09), ("declines", 0.06), ("padding", 0.09),
                        ("sycophancy", 0.1), ("on_policy", 0.5))  # share of training pairs per category:
    #                                   half are the SFT model's own samples, the replies PPO's reward
    #                                   model will have to rank (with 0.2 and one pair per prompt, PPO
    #                                   against the RM was above SFT in one of six training seeds)
    mix: tuple = (("facts", 0.25), ("unknowns", 0.15), ("declines", 0.1), ("padding", 0.15),
                  ("sycophancy", 0.15), ("on_policy", 0.2))  # share of held-out pairs per category
    on_policy_prompts: int = 9000     # prompts the SFT model answers for on-policy pairs (train side)
    on_policy_samples: int = 4        # sampled replies per prompt; every two with different gold scores make a pair
    sample_temperature: float = 1.0   # sampling temperature of the on-policy replies
    n_fresh: int = 300                # fresh held-out prompts whose SFT samples measure RM-vs-gold rank correlation
    seed: int = 0                     # seeds prompts, replies, labels and sampling


@dataclass(frozen=True)
class RewardConfig:
    """The reward model (notebook 05, ``llmlab.reward``)."""

    init: str = "sft"                 # weights the body starts from: "sft", "base" or "random"
    max_steps: int = 400              # optimiser steps of the reward model
    batch_size: int = 32              # preference pairs per step (64 sequences)
    lr: float = 3e-4                  # peak learning rate (SFT's)
    warmup_steps: int = 20            # linear warmup steps
    weight_decay: float = 0.0         # AdamW decay
    eval_every: int = 50              # steps between held-out accuracy estimates
    eval_batches: int = 8             # batches per held-out estimate
    compare_steps: int = 150          # steps of each run in the SFT / base / random init comparison
    likelihood_weight: float | None = 0.2  # start of the learned weight on log p(reply | prompt); None: head only
    seed: int = 0                     # seeds the head's init and the batch order


PREF_PRESETS = {
    "smoke": PrefConfig(n_train=300, n_val=120, on_policy_prompts=80, n_fresh=40),
    "cpu": PrefConfig(),
    "gpu": PrefConfig(n_train=40000, n_val=4000, on_policy_prompts=24000, n_fresh=1000),
}
REWARD_PRESETS = {
    "smoke": RewardConfig(max_steps=30, batch_size=8, lr=1e-3, warmup_steps=3, eval_every=10,
                          eval_batches=2, compare_steps=15),
    "cpu": RewardConfig(),
    "gpu": RewardConfig(max_steps=1500, batch_size=64, lr=1e-4, compare_steps=400),
}


def pref_config(preset: Preset | str | None = None) -> PrefConfig:
    """The :class:`PrefConfig` of a preset (a :class:`Preset`, its name, or None for the default)."""
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    return PREF_PRESETS[p.name]


def reward_config(preset: Preset | str | None = None) -> RewardConfig:
    """The :class:`RewardConfig` of a preset (a :class:`Preset`, its name, or None for the default)."""
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    return REWARD_PRESETS[p.name]


# --- notebook 06: RLHF with PPO --------------------------------------------------------------
# Appended like notebook 05's configs: each preset's values live in PPO_PRESETS below and are
# read with ppo_config.


@dataclass(frozen=True)
class PPOConfig:
    """PPO against the reward model (notebook 06, ``llmlab.ppo``)."""

    iterations: int = 20              # PPO iterations of the main run (rollout, score, update)
    batch_size: int = 64              # prompts per rollout, one sampled reply each
    minibatch_size: int = 32          # episodes per optimiser step
    epochs: int = 2                   # passes over each rollout
    lr: float = 1.5e-4                # AdamW learning rate of policy and value model (constant)
    grad_clip: float = 1.0            # clip the global gradient norm (policy and value together)
    clip: float = 0.2                 # policy ratio clip epsilon (Schulman et al. 2017)
    clip_value: float = 0.2           # value clip around the rollout's values (0 = no clipping)
    vf_coef: float = 0.5              # weight of the value loss in the summed loss
    gamma: float = 1.0                # discount per token (1: the reply is one episode)
    lam: float = 0.95                 # GAE lambda
    whiten: bool = True               # normalise advantages over each rollout
    kl: str = "adaptive"              # KL controller: "fixed" or "adaptive" (Ziegler et al. 2019)
    beta: float = 0.4                 # KL coefficient (the adaptive controller's start), inside the seed's
    #                                   0.1-0.5. Picked from 0.2, 0.4 and 0.5 at this horizon (benchmarks/ppo.py
    #                                   --kl-sweep: 6 training seeds each, scored on the held-out prompts, against
    #                                   the reward model before its decline pairs held "I don't know"): from 0.2
    #                                   the held-out KL averaged 1.4 nats, from 0.4 and 0.5 about the target, 0.4
    #                                   with more seeds' gains above 0. (0.15 with target 3 and horizon 500 let
    #                                   a run drift to 7-8 nats and answer every prompt with a refusal)
    target_kl: float = 1.0            # adaptive: the KL per reply (nats) beta steers towards
    horizon: int = 1280               # adaptive: episodes over which beta may change by about 20%: the run's
    #                                   20 x 64 episodes, so beta moves by at most 1% per rollout (Ziegler et
    #                                   al. 2019 used 10,000 episodes)
    fast_beta: float = 1.0            # the "fast controller" run of section 3 (variant fast_kl): beta from 1.0
    fast_horizon: int = 64            #   with a horizon of one rollout, so beta moves by up to 20% per rollout
    #                                   (the main run's controller until the slow one held the target better)
    max_new_tokens: int = 24          # longest sampled reply (tokens)
    no_stop_penalty: float = 1.0      # subtracted from the RM score of a reply that never stops
    n_prompts: int = 2000             # training-split prompt pool the rollouts draw from
    n_eval: int = 480                 # held-out prompts of each evaluation (364 distinct texts at the cpu
    #                                   preset; at 160, 125 distinct, a paired interval of PPO - SFT
    #                                   was about +-0.3 and a gain of 0.15-0.2 went unseparated)
    n_eval_declines: int = 90         # held-out decline requests added to the world's 10 (a quarter of
    #                                   the evaluation's prompts are decline requests: with the world's
    #                                   10 alone a refusal rate's interval was about +-0.25)
    eval_samples: int = 4             # sampled replies per held-out prompt: averages out one
    #                                   prompt's sampling noise (at 1, most of a paired gold
    #                                   difference's interval was that noise); intervals count prompts
    eval_every: int = 5               # iterations between held-out evaluations
    n_track: int = 3                  # held-out prompts followed through training (the slider)
    track_samples: int = 3            # sampled replies per followed prompt at each look
    track_every: int = 5              # iterations between looks at the followed prompts
    beta0_iterations: int = 120       # iterations of the beta = 0 run (reward hacking); against the reward
    #                                   model trained on half on-policy pairs its held-out gold reward
    #                                   was still near its peak after 60 iterations on one 2-core
    #                                   machine and fell just after it on another; at 120 the policy
    #                                   stops ending its replies (80-100) and the gold reward collapses
    beta0_eval_every: int = 30        # iterations between the beta = 0 and small-beta runs' evaluations
    small_beta: float = 0.1           # fixed beta of the small-beta run (the seed's range starts here), beta0's iterations
    stability_iterations: int = 3     # iterations of each stability run (no whitening, ...)
    best_of_n: tuple = (1, 2, 4, 8, 16)  # n of the best-of-n baseline
    seed: int = 0                     # seeds the prompts and the held-out evaluation's sampling
    train_seed: int = 0               # seeds the run itself (its rollouts' prompts and samples,
    #                                   minibatch order): a repeat with another train_seed is
    #                                   measured on the same held-out prompts and samples


PPO_PRESETS = {
    "smoke": PPOConfig(iterations=2, batch_size=8, minibatch_size=8, epochs=1, max_new_tokens=8,
                       n_prompts=32, n_eval=8, n_eval_declines=4, eval_samples=2, eval_every=2, n_track=1, track_samples=1, track_every=2,
                       beta0_iterations=2, beta0_eval_every=2, stability_iterations=1, best_of_n=(1, 2)),
    "cpu": PPOConfig(),
    "gpu": PPOConfig(iterations=200, batch_size=256, minibatch_size=64, lr=5e-5, max_new_tokens=48,
                     beta=0.15, target_kl=3.0, horizon=500,   # not yet tuned on a GPU
                     n_prompts=20000, n_eval=1000, eval_every=20, track_every=20,
                     beta0_iterations=300, beta0_eval_every=50,
                     stability_iterations=40, best_of_n=(1, 2, 4, 8, 16, 32, 64)),
}


def ppo_config(preset: Preset | str | None = None) -> PPOConfig:
    """The :class:`PPOConfig` of a preset (a :class:`Preset`, its name, or None for the default)."""
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    return PPO_PRESETS[p.name]


# --- notebook 07: direct preference optimisation ------------------------------------------
# Each preset's values live in DPO_PRESETS, read with dpo_config (as notebook 05's blocks).


@dataclass(frozen=True)
class DPOConfig:
    """Direct preference optimisation (notebook 07, ``llmlab.dpo``)."""

    beta: float = 0.5                 # KL strength of the main run: the implicit reward is beta * log(pi / pi_ref)
    betas: tuple = (0.1, 0.5, 2.0)    # betas of the frontier (gold reward against KL); each is one run
    small_beta: float = 0.003         # the "too small" beta of the failure-mode run
    label_smoothing: float = 0.2      # conservative DPO: the share of labels assumed flipped (Mitchell 2023)
    ipo_beta: float = 0.1             # IPO's regulariser tau (Azar et al. 2023): the log-ratio margin target is 1 / (2 tau)
    max_steps: int = 30               # optimiser steps of every run
    batch_size: int = 16              # preference pairs per step (32 sequences through the policy and the reference)
    lr: float = 1e-4                  # peak learning rate (a third of SFT's; 3e-4 moved the policy to a KL of 4-5 nats in 30 steps)
    warmup_steps: int = 3             # linear warmup steps
    eval_every: int = 10              # steps between held-out estimates (the log-prob curves)
    eval_batches: int = 2             # held-out batches per estimate (the same batches every time)
    seed: int = 0                     # seeds the batch order
    seeds: tuple = (1, 2)             # batch-order seeds of repeats of the main run (how much of one
    #                                   run's result is its draw of batches)


DPO_PRESETS = {
    "smoke": DPOConfig(max_steps=12, batch_size=4, warmup_steps=2, eval_every=4, eval_batches=2,
                       lr=3e-4),
    "cpu": DPOConfig(),
    "gpu": DPOConfig(max_steps=300, batch_size=64, lr=5e-5, warmup_steps=20, eval_every=25,
                     eval_batches=8),
}


def dpo_config(preset: Preset | str | None = None) -> DPOConfig:
    """The :class:`DPOConfig` of a preset (a :class:`Preset`, its name, or None for the default)."""
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    return DPO_PRESETS[p.name]


# --- notebook 08: beyond RLHF -----------------------------------------------------------------
# Each preset's values live in BEYOND_PRESETS, read with beyond_config (as notebook 05's blocks).
# Reply length, the missing-stop penalty, gradient clipping and the prompts come from PPOConfig;
# DPO's beta, rate and batch from DPOConfig, so every method runs on notebook 06's and 07's terms.


@dataclass(frozen=True)
class BeyondConfig:
    """Rejection sampling, GRPO, iterative DPO and AI feedback (notebook 08, ``llmlab.beyond``)."""

    best_of_n: tuple = (1, 2, 4, 8, 16)  # n of the best-of-n curve on the held-out prompts
    rft_prompts: int = 256            # training prompts sampled for rejection-sampling fine-tuning
    rft_samples: int = 8              # replies sampled per prompt; the reward model's best is kept
    rft_steps: int = 40               # optimiser steps of SFT's loss on the kept replies
    rft_batch_size: int = 16          # conversations per step
    rft_lr: float = 1e-4              # peak learning rate (a third of SFT's, as DPO's)
    grpo_iterations: int = 20         # GRPO iterations (sample, score, update), as PPO's main run
    grpo_prompts: int = 16            # prompts per iteration
    grpo_group: int = 4               # replies per prompt (G): 16 x 4 = PPO's 64 episodes per iteration
    grpo_epochs: int = 2              # passes over each iteration's replies (PPO's)
    grpo_minibatch_size: int = 32     # replies per optimiser step (PPO's)
    grpo_lr: float = 1.5e-4           # AdamW learning rate, constant (PPO's)
    grpo_clip: float = 0.2            # policy ratio clip epsilon (PPO's)
    grpo_beta: float = 0.04           # weight of the k3 KL term in the loss (DeepSeekMath's value)
    idpo_rounds: int = 3              # rounds of iterative DPO (sample, label, train)
    idpo_prompts: int = 128           # fresh training prompts per round
    idpo_samples: int = 4             # replies sampled per prompt; the RM's best and worst make a pair
    idpo_steps: int = 10              # DPO steps per round (3 x 10 = notebook 07's 30)
    ai_pairs: int = 100               # notebook-05 pairs per principle labelled by the AI labeler
    cai_prompts: int = 256            # training prompts the SFT model critiques and revises its replies to
    seed: int = 0                     # seeds sampling, batch order and tie-breaking


BEYOND_PRESETS = {
    "smoke": BeyondConfig(best_of_n=(1, 2, 4), rft_prompts=16, rft_samples=2, rft_steps=4,
                          rft_batch_size=4, grpo_iterations=2, grpo_prompts=4, grpo_group=2,
                          grpo_minibatch_size=8, grpo_epochs=1, idpo_rounds=2, idpo_prompts=8,
                          idpo_samples=3, idpo_steps=3, ai_pairs=6, cai_prompts=16),
    "cpu": BeyondConfig(),
    "gpu": BeyondConfig(best_of_n=(1, 2, 4, 8, 16, 32, 64), rft_prompts=4000, rft_steps=300,
                        rft_batch_size=64, rft_lr=5e-5, grpo_iterations=200, grpo_prompts=64,
                        grpo_group=4, grpo_minibatch_size=64, grpo_lr=5e-5, idpo_rounds=3,
                        idpo_prompts=2000, idpo_steps=100, ai_pairs=1000, cai_prompts=4000),
}


def beyond_config(preset: Preset | str | None = None) -> BeyondConfig:
    """The :class:`BeyondConfig` of a preset (a :class:`Preset`, its name, or None for the default)."""
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    return BEYOND_PRESETS[p.name]
