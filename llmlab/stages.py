"""The artifact chain: what each notebook needs, rebuilt through the cache when missing.

This module only *declares* artifacts; the code that makes each one (its *recipe*) lives in
its stage's module. Each ``get_*`` function returns a checked
:class:`~llmlab.artifacts.Artifact` (or an object loaded from one), building it -- and whatever
it depends on -- by calling the recipe. This is how any notebook opens on its own: notebook 06
on a fresh Colab asks for the SFT model, which asks for the base model, which asks for the
token files, and so on down to the world's crawl. Only this module (and the entry points in
``llmlab/__main__.py`` and ``nb.py``) knows the chain: a recipe receives its inputs.

==========  ======================================  =======================================
artifact    recipe                                  used by
==========  ======================================  =======================================
crawl       ``world.write_crawl``                   notebook 01 (the data pipeline)
corpus      ``data.pipeline.build_corpus``          tokenizer, tokens; notebook 01
tokenizer   ``tokenizer.build_tokenizer``           tokens, every model; notebooks 01-04
tokens      ``packing.build_token_files``           pretraining; notebooks 01-02
base_model  ``train.build_base_model``              SFT; notebooks 02 and 04
sweep_data  ``scaling.build_sweep_data``            notebook 03
sweep       ``scaling.build_sweep``                 notebook 03
sft_data    ``sft.build_sft_data``                  SFT; notebook 04
sft_model   ``sft.build_sft_model``                 notebook 04 (and later alignment stages)
==========  ======================================  =======================================

**Declaring an artifact** (append a section at the end, in notebook order)::

    def get_thing(preset=None, root=None) -> Artifact:
        p = _preset(preset)
        dep = get_other(p, root=root)                       # the artifacts it reads
        return ensure("thing", p.name, [p.thing], lambda tmp: thing_mod.build_thing(
            tmp, ...inputs loaded from dep...), deps=[dep], code=code_of(thing_mod.build_thing),
            root=root)

``ensure`` rebuilds when the configs, a dependency or the *code* changed; the code is
``code_of(recipe)``: the recipe's module and every llmlab module it imports, transitively
(derived with ``ast``, never listed by hand).
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path

from . import world as world_mod
from .artifacts import Artifact, ensure
from .artifacts import code_of as _code_of
from .config import Preset, get_preset


@lru_cache(maxsize=None)
def code_of(recipe) -> tuple:
    """:func:`llmlab.artifacts.code_of`, read once per recipe and session: it parses the syntax
    tree of every module the recipe reaches, and every ``get_*`` re-checks its whole chain, so
    a notebook that asks for a few artifacts would otherwise spend seconds re-reading the same
    import graph. (The source itself is still hashed at every check.)"""
    return tuple(_code_of(recipe))


def _preset(preset: Preset | str | None) -> Preset:
    return preset if isinstance(preset, Preset) else get_preset(preset)


@lru_cache(maxsize=4)
def _world_cached(cfg) -> world_mod.World:
    return world_mod.build_world(cfg)


def get_world(preset: Preset | str | None = None) -> world_mod.World:
    """The synthetic world of ``preset`` (built in memory in seconds; deterministic)."""
    return _world_cached(_preset(preset).world)


def get_crawl(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """The world's crawl: ``crawl.warc.gz`` (gzip WARC) and ``truth.jsonl.gz`` (ground truth)."""
    p = _preset(preset)
    return ensure("crawl", p.name, [p.world], lambda tmp: world_mod.write_crawl(get_world(p), tmp),
                  code=code_of(world_mod.write_crawl), root=root)


# --- notebook 01: the cleaned corpus (llmlab.data) ---------------------------------------


def get_corpus(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """The cleaned corpus (notebook 01, section 6): ``corpus.jsonl.gz``, one JSON document per
    line (``url``, ``source``, ``kind``, ``text``), built by
    :func:`llmlab.data.pipeline.build_corpus` from :func:`get_crawl`; ``info`` is the pipeline's
    report (documents in and out of every step, scores against the world's ground truth).
    Read it with :func:`llmlab.data.pipeline.read_corpus`."""
    from .data import pipeline

    p = _preset(preset)
    crawl_art = get_crawl(p, root=root)

    def build(tmp: Path) -> dict:
        truth = world_mod.read_truth(crawl_art.file("truth.jsonl.gz"))
        return pipeline.build_corpus(tmp, crawl_art.file("crawl.warc.gz"), truth, p.data)

    return ensure("corpus", p.name, [p.world, p.data], build, deps=[crawl_art],
                  code=code_of(pipeline.build_corpus), root=root)


# --- notebook 01: tokenizer and packed token files (llmlab.tokenizer, llmlab.packing) ----


def _corpus_texts(corpus: Artifact) -> list[str]:
    """The document texts of the cleaned corpus, in corpus order."""
    from .data.pipeline import read_corpus

    return [d["text"] if isinstance(d, dict) else str(d) for d in read_corpus(corpus)]


@lru_cache(maxsize=4)
def _load_tokenizer(path: str, artifact_hash: str):
    from .tokenizer import Tokenizer

    return Tokenizer.load(path)


def get_tokenizer_artifact(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """The artifact ``tokenizer`` (``tokenizer.json``): byte-level BPE trained with
    :func:`llmlab.tokenizer.build_tokenizer` on the cleaned corpus, showing its progress."""
    from . import tokenizer as tokenizer_mod

    p = _preset(preset)
    corpus = get_corpus(p, root=root)
    return ensure("tokenizer", p.name, [p.tokenizer],
                  lambda tmp: tokenizer_mod.build_tokenizer(tmp, _corpus_texts(corpus), p.tokenizer),
                  deps=[corpus], code=code_of(tokenizer_mod.build_tokenizer), root=root)


def get_tokenizer(preset: Preset | str | None = None, root: Path | None = None):
    """The byte-level BPE tokenizer of ``preset`` (notebook 01, "Tokenizer"): a
    :class:`llmlab.tokenizer.Tokenizer` with ``vocab_size == preset.tokenizer.vocab_size``,
    loaded from :func:`get_tokenizer_artifact`."""
    art = get_tokenizer_artifact(preset, root=root)
    return _load_tokenizer(str(art.file("tokenizer.json")), art.hash)


def get_tokens(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """The packed token files of ``preset`` (notebook 01, "Packing"): ``train.bin`` and
    ``val.bin`` (uint16, documents joined by end-of-text, split by document with
    ``DataConfig.val_frac``); ``info`` has the token counts and bytes per token. Built by
    :func:`llmlab.packing.build_token_files`; read them with :func:`llmlab.packing.load_tokens`."""
    from . import packing as packing_mod

    p = _preset(preset)
    corpus = get_corpus(p, root=root)
    tok_art = get_tokenizer_artifact(p, root=root)
    tok = _load_tokenizer(str(tok_art.file("tokenizer.json")), tok_art.hash)
    return ensure("tokens", p.name, [p.tokenizer, p.data],
                  lambda tmp: packing_mod.build_token_files(tmp, _corpus_texts(corpus), tok,
                                                            p.data.val_frac),
                  deps=[corpus, tok_art], code=code_of(packing_mod.build_token_files), root=root)


# --- notebook 02: the base model (llmlab.model, llmlab.train) -----------------------------


def pretraining_pages(preset: Preset | str | None = None, root: Path | None = None) -> list:
    """The world's pages behind the training split of the token files (notebook 02, section 6).

    The cleaned corpus keeps a page's url; :func:`llmlab.packing.split_documents` decides which
    documents went to ``train.bin``. A page kept twice counts twice.
    """
    return _split_pages(preset, "train", root)


def validation_pages(preset: Preset | str | None = None, root: Path | None = None) -> list:
    """The world's pages behind ``val.bin`` (see :func:`pretraining_pages`)."""
    return _split_pages(preset, "val", root)


def _split_pages(preset, split: str, root) -> list:
    from . import packing as packing_mod
    from .data.pipeline import read_corpus

    p = _preset(preset)
    docs = read_corpus(get_corpus(p, root=root))
    train_idx, val_idx = packing_mod.split_documents(len(docs), p.data.val_frac, 0)
    by_url = {pg.url: pg for pg in get_world(p).pages}
    idx = train_idx if split == "train" else val_idx
    return [by_url[docs[i]["url"]] for i in idx if docs[i].get("url") in by_url]


def renderer_entropy_bits_per_byte(preset: Preset | str | None = None, pages=None,
                                   root: Path | None = None) -> float:
    """The world renderer's entropy per byte of main text over ``pages`` (default: the
    validation pages): the data's irreducible bits per byte given the knowledge base
    (:meth:`llmlab.world.World.entropy_of_pages`; a copy counts its original's bits)."""
    pages = validation_pages(preset, root=root) if pages is None else pages
    return get_world(preset).entropy_of_pages(pages)


def pretraining_fact_counts(preset: Preset | str | None = None, root: Path | None = None):
    """How many times each fact id is stated in the pretraining (training-split) pages."""
    return get_world(preset).fact_counts(pretraining_pages(preset, root=root))


def _token_arrays(tokens: Artifact):
    from .packing import load_tokens

    return load_tokens(tokens.file("train.bin")), load_tokens(tokens.file("val.bin"))


def get_base_model(preset: Preset | str | None = None, root: Path | None = None,
                   callback=None, progress: bool = True) -> Artifact:
    """The pretrained base model (notebook 02): ``model.pt`` (a checkpoint with its config,
    :func:`llmlab.train.save_checkpoint`) and ``train_log.json`` (the :class:`TrainResult`:
    losses per step, validation losses, tokens/s, MFU, wall time), built by
    :func:`llmlab.train.build_base_model`. ``callback`` and ``progress`` are passed to
    :func:`llmlab.train.train` when the model has to be trained."""
    from . import train as train_mod

    p = _preset(preset)
    tokens = get_tokens(p, root=root)
    return ensure("base_model", p.name, [p.model, p.train],
                  lambda tmp: train_mod.build_base_model(tmp, p.model, p.train, *_token_arrays(tokens),
                                                         callback=callback, progress=progress),
                  deps=[tokens], code=code_of(train_mod.build_base_model), root=root)


def load_base_model(preset: Preset | str | None = None, device=None, root: Path | None = None):
    """The base model of :func:`get_base_model` as a :class:`llmlab.model.GPT` in eval mode."""
    from .train import load_checkpoint

    art = get_base_model(preset, root=root)
    model, _ = load_checkpoint(art.file("model.pt"), device=device)
    return model.eval()


def load_train_log(preset: Preset | str | None = None, root: Path | None = None) -> dict:
    """The base model's :class:`llmlab.train.TrainResult` as a dict (``train_log.json``)."""
    import json

    return json.loads(get_base_model(preset, root=root).file("train_log.json").read_text())



# --- notebook 03: the IsoFLOP sweep (llmlab.scaling) --------------------------------------


def get_sweep(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """Notebook 03's IsoFLOP sweep (section 2): ``sweep.csv`` (one row per run: budget, width,
    N, D, steps, FLOPs, final validation loss, seconds, epochs) and ``sweep.json`` (the same
    rows and the config), built by :func:`llmlab.scaling.build_sweep` on the preset's token
    files with ``ScalingConfig``; ``info`` has the wall time. Read the rows back with
    :func:`llmlab.scaling.read_sweep_csv`."""
    from . import scaling as scaling_mod
    from .config import TrainConfig

    p = _preset(preset)
    data = get_sweep_data(p, root=root)
    # the runs take their optimiser settings from TrainConfig's defaults (weight decay, clipping,
    # cosine floor) and everything else from ScalingConfig, so tuning the preset's pretraining
    # run (notebook 02) does not rerun the sweep
    return ensure("sweep", p.name, [p.scaling, p.model, TrainConfig()],
                  lambda tmp: scaling_mod.build_sweep(tmp, p.name, p.scaling, p.model,
                                                      *_token_arrays(data)),
                  deps=[data], code=code_of(scaling_mod.build_sweep), root=root)


def get_sweep_data(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """Notebook 03's fresh text (section 2): ``train.bin`` with as many tokens as the sweep's
    longest run reads, so that no run sees a token twice, and ``val.bin``; new pages from the
    world's knowledge base (:func:`llmlab.world.iter_pages`) encoded with notebook 01's
    tokenizer by :func:`llmlab.scaling.build_sweep_data`. ``info`` has the counts, bytes per
    token and the renderer's entropy per byte of each split."""
    from . import scaling as scaling_mod

    p = _preset(preset)
    tok_art = get_tokenizer_artifact(p, root=root)
    tok = _load_tokenizer(str(tok_art.file("tokenizer.json")), tok_art.hash)
    n_train = scaling_mod.tokens_needed(scaling_mod.plan_sweep(p.scaling, p.model))
    return ensure("sweep_data", p.name, [p.world, p.scaling, p.model],
                  lambda tmp: scaling_mod.build_sweep_data(tmp, get_world(p), tok, n_train,
                                                           p.scaling.val_tokens, p.scaling.data_seed),
                  deps=[tok_art], code=code_of(scaling_mod.build_sweep_data), root=root)


# --- notebook 04: the SFT model (llmlab.sft) ----------------------------------------------


def get_sft_data(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """Notebook 04's instruction data (section 1), built by :func:`llmlab.sft.build_sft_data`:
    ``train.jsonl``, ``val.jsonl`` and ``eval.jsonl`` (the held-out prompts)."""
    from . import sft as sft_mod

    p = _preset(preset)
    return ensure("sft_data", p.name, [p.world, p.sft],
                  lambda tmp: sft_mod.build_sft_data(tmp, get_world(p), p.sft),
                  code=code_of(sft_mod.build_sft_data), root=root)


def load_sft_data(preset: Preset | str | None = None, root: Path | None = None) -> dict:
    """``{"train", "val", "eval"}``: the lists of conversations of :func:`get_sft_data`."""
    import json

    art = get_sft_data(preset, root=root)
    # split on "\n" only: str.splitlines would also cut at U+2028 inside a JSON string
    return {name: [json.loads(line) for line in art.file(f"{name}.jsonl").read_text(
        encoding="utf-8").split("\n") if line] for name in ("train", "val", "eval")}


def get_sft_model(preset: Preset | str | None = None, variant: str = "main",
                  root: Path | None = None) -> Artifact:
    """A fine-tuned model (notebook 04), built by :func:`llmlab.sft.build_sft_model`:
    ``model.pt`` and ``info`` with its losses, wall time and pretraining validation loss before
    and after.

    ``variant`` (:data:`llmlab.sft.VARIANTS`): ``main`` (the large dataset, loss on replies,
    ``SFTConfig.lr``), ``nomask`` (loss on every token, section 3), ``high_lr``
    (``SFTConfig.high_lr``, section 4), ``small`` (the first ``n_small`` conversations, section 5).
    """
    from . import sft as sft_mod
    from .device import pick_device

    p = _preset(preset)
    if variant not in sft_mod.VARIANTS:
        raise ValueError(f"unknown SFT variant {variant!r}; expected one of {sorted(sft_mod.VARIANTS)}")
    data_art = get_sft_data(p, root=root)
    base_art = get_base_model(p, root=root)
    tok_art = get_tokenizer_artifact(p, root=root)
    tokens_art = get_tokens(p, root=root)

    def build(tmp: Path) -> dict:
        device = pick_device()
        return sft_mod.build_sft_model(
            tmp, variant, p.sft, p.train, p.model.block_size,
            load_base_model(p, device=device, root=root), get_tokenizer(p, root=root),
            load_sft_data(p, root=root), _token_arrays(tokens_art)[1], device=device)

    name = "sft" if variant == "main" else f"sft_{variant}"
    return ensure(name, p.name, [p.sft, p.model], build, deps=[data_art, base_art, tok_art, tokens_art],
                  code=code_of(sft_mod.build_sft_model), root=root)


def load_sft_model(preset: Preset | str | None = None, device=None, variant: str = "main",
                   root: Path | None = None):
    """The fine-tuned :class:`~llmlab.model.GPT` of :func:`get_sft_model`, in eval mode."""
    from .device import pick_device
    from .train import load_checkpoint

    art = get_sft_model(preset, variant, root=root)
    device = pick_device(device) if not hasattr(device, "type") else device
    model, _ = load_checkpoint(art.file("model.pt"), device=device)
    return model.eval()



# --- notebook 05: preference pairs and the reward model (llmlab.prefs, llmlab.reward) -----


def get_prefs(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """Notebook 05's preference pairs (section 2): ``train.jsonl`` and ``val.jsonl`` (pairs of
    :func:`llmlab.prefs.make_pairs`: controlled variants and the SFT model's own samples,
    labelled by the gold judge with Bradley-Terry noise; ``val`` asks only about SFT's held-out
    facts, entities and requests), ``fresh.jsonl`` (one sampled SFT reply to each of
    ``PrefConfig.n_fresh`` further held-out prompts, with its gold score) and ``train_side.jsonl``
    (pairs drawn like ``val`` about the training side, each marked ``seen`` when it repeats a
    training pair). ``info`` holds :func:`llmlab.prefs.pair_summary` of the three sets of pairs."""
    from . import prefs as prefs_mod
    from .config import pref_config

    p = _preset(preset)
    c = pref_config(p)
    sft_art = get_sft_model(p, root=root)
    tok_art = get_tokenizer_artifact(p, root=root)

    def build(tmp: Path) -> dict:
        from .device import pick_device

        device = pick_device()
        return prefs_mod.build_prefs(tmp, c, p.sft, get_world(p), get_tokenizer(p, root=root),
                                     load_sft_model(p, device, root=root))

    return ensure("prefs", p.name, [p.world, p.sft, c], build, deps=[sft_art, tok_art],
                  code=code_of(prefs_mod.build_prefs), root=root)


def load_prefs(preset: Preset | str | None = None, root: Path | None = None) -> dict:
    """``{"train", "val", "fresh", "train_side"}``: the lists of :func:`get_prefs`."""
    import json

    art = get_prefs(preset, root=root)
    return {name: [json.loads(line) for line in art.file(f"{name}.jsonl").read_text(
        encoding="utf-8").splitlines()] for name in ("train", "val", "fresh", "train_side")}


# the reward-model runs notebook 05 compares: (initial weights, budget)
REWARD_VARIANTS = {"main": ("config", "max_steps"), "head_only": ("config", "max_steps"),
                   "sft_short": ("sft", "compare_steps"), "base_short": ("base", "compare_steps"),
                   "random_short": ("random", "compare_steps")}


def get_reward_model(preset: Preset | str | None = None, variant: str = "main",
                     root: Path | None = None, progress: bool = True) -> Artifact:
    """A reward model (notebook 05): ``model.pt`` (a reward :class:`~llmlab.model.ScalarModel`
    checkpoint) and ``info`` with its training curve (held-out accuracy per evaluation, on the
    loop's fixed validation batches), wall time and pairs seen.

    ``variant`` (:data:`REWARD_VARIANTS`): ``main`` (``RewardConfig.init`` weights,
    ``max_steps``), ``head_only`` (the same without the likelihood term: the classic
    scalar-head reward model, section 4's peer) and ``sft_short`` / ``base_short`` /
    ``random_short`` (section 5: the same training for ``compare_steps`` from SFT, base or
    random weights).
    """
    from . import reward as reward_mod
    from .config import reward_config

    p = _preset(preset)
    rc = reward_config(p)
    if variant not in REWARD_VARIANTS:
        raise ValueError(f"unknown reward variant {variant!r}; expected one of {sorted(REWARD_VARIANTS)}")
    init, budget = REWARD_VARIANTS[variant]
    init = rc.init if init == "config" else init
    if variant == "head_only":
        rc = dataclasses.replace(rc, likelihood_weight=None)
    steps = getattr(rc, budget)
    prefs_art = get_prefs(p, root=root)
    deps = [prefs_art, get_tokenizer_artifact(p, root=root)]
    deps.append(get_sft_model(p, root=root) if init == "sft"
                else get_base_model(p, root=root))

    def build(tmp: Path) -> dict:
        from .device import pick_device

        lm = (load_sft_model(p, root=root) if init == "sft" else
              load_base_model(p, root=root) if init == "base" else None)
        return reward_mod.build_reward_model(tmp, variant, init, steps, rc, p.train, p.model,
                                             p.sft.template, get_tokenizer(p, root=root),
                                             load_prefs(p, root=root), lm, pick_device(),
                                             progress=progress)

    return ensure("reward" if variant == "main" else f"reward_{variant}", p.name,
                  [p.model, p.sft, rc], build, deps=deps,
                  code=code_of(reward_mod.build_reward_model), root=root)


def load_reward_model(preset: Preset | str | None = None, device=None, variant: str = "main",
                      root: Path | None = None):
    """The reward :class:`~llmlab.model.ScalarModel` of :func:`get_reward_model`, in eval mode."""
    from . import reward as reward_mod
    from .device import pick_device

    art = get_reward_model(preset, variant, root=root)
    device = pick_device(device) if not hasattr(device, "type") else device
    return reward_mod.load_reward_model(art.file("model.pt"), device=device).eval()


# --- notebook 06: RLHF with PPO (llmlab.ppo) ----------------------------------------------


def get_sft_eval(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """The SFT model measured on notebook 06's held-out prompts (:func:`llmlab.ppo.build_sft_eval`:
    ``ppo.evaluate_policy`` with the main ``PPOConfig``'s prompts, seed and samples, replies kept)
    in ``info``. It is every PPO run's iteration 0 and the row every later notebook compares
    against, so it is measured once."""
    from . import ppo as ppo_mod
    from .config import ppo_config, reward_config

    p = _preset(preset)
    c = ppo_config(p)
    deps = [get_sft_model(p, root=root), get_reward_model(p, root=root), get_tokenizer_artifact(p, root=root)]

    def build(tmp: Path) -> dict:
        from .device import pick_device

        device = pick_device()
        return ppo_mod.build_sft_eval(c, p.sft, get_world(p), get_tokenizer(p, root=root),
                                      load_sft_model(p, device, root=root),
                                      load_reward_model(p, device, root=root))

    return ensure("sft_eval", p.name, [p.world, p.sft, p.model, reward_config(p), c], build,
                  deps=deps, code=code_of(ppo_mod.build_sft_eval), root=root)


def get_ppo(preset: Preset | str | None = None, variant: str = "main", root: Path | None = None,
            progress: bool = True, callback=None) -> Artifact:
    """A PPO run (notebook 06), built by :func:`llmlab.ppo.build_ppo`: ``model.pt`` (the
    policy), ``track.json`` (the followed prompts' sampled replies per iteration) and ``info``
    with the run's config, per-iteration ``history`` (proxy, gold, KL, beta, losses), held-out
    ``evals`` and ``final_eval`` (:func:`llmlab.ppo.evaluate_policy`) and wall time.

    ``variant`` (:data:`llmlab.ppo.VARIANTS`): ``main`` (``PPOConfig``), ``beta0`` (no KL
    penalty, section 5), ``small_beta`` (a fixed ``PPOConfig.small_beta``, section 5), ``fast_kl`` (the adaptive
    controller with ``PPOConfig.fast_beta`` and ``fast_horizon``, section 3), ``nowhiten`` / ``noclip_value`` / ``lr10`` (short stability runs,
    section 6). ``callback(iteration, metrics)`` sees each iteration when the run is built.
    """
    from . import ppo as ppo_mod
    from .config import ppo_config, reward_config

    p = _preset(preset)
    c = ppo_config(p)
    cv = ppo_mod.variant_config(c, variant)     # a clear error for an unknown variant
    sft_art = get_sft_model(p, root=root)
    rm_art = get_reward_model(p, root=root)
    tok_art = get_tokenizer_artifact(p, root=root)
    # the run starts from the SFT policy: its held-out evaluation is measured once for every run
    same_eval = all(getattr(cv, f) == getattr(c, f) for f in
                    ("seed", "n_prompts", "n_eval", "n_track", "eval_samples", "max_new_tokens", "no_stop_penalty"))
    eval_art = get_sft_eval(p, root=root) if same_eval else None

    def build(tmp: Path) -> dict:
        from .device import pick_device

        device = pick_device()
        return ppo_mod.build_ppo(tmp, variant, c, p.sft, get_world(p), get_tokenizer(p, root=root),
                                 load_sft_model(p, device, root=root),
                                 load_reward_model(p, device, root=root), device, progress, callback,
                                 initial_eval=eval_art.info if eval_art is not None else None)

    return ensure("ppo" if variant == "main" else f"ppo_{variant}", p.name,
                  [p.world, p.sft, p.model, reward_config(p), c], build,
                  deps=[sft_art, rm_art, tok_art] + ([eval_art] if eval_art is not None else []),
                  code=code_of(ppo_mod.build_ppo), root=root)


def load_ppo_policy(preset: Preset | str | None = None, variant: str = "main", device=None,
                    root: Path | None = None):
    """The PPO-trained policy (a :class:`~llmlab.model.GPT`) of :func:`get_ppo`, in eval mode."""
    from .device import pick_device
    from .train import load_checkpoint

    art = get_ppo(preset, variant, root=root)
    device = pick_device(device) if not hasattr(device, "type") else device
    model, _ = load_checkpoint(art.file("model.pt"), device=device)
    return model.eval()


# --- notebook 07: direct preference optimisation (llmlab.dpo) -----------------------------


def get_dpo(preset: Preset | str | None = None, variant: str = "main", root: Path | None = None,
            progress: bool = True) -> Artifact:
    """A DPO policy (notebook 07), built by :func:`llmlab.dpo.build_dpo`: ``model.pt`` and
    ``info`` with the run's settings, wall time, held-out curves (the policy's log-probabilities
    of chosen and rejected replies, implicit-reward margin and accuracy) and the implicit-reward
    accuracy and margins on every held-out pair of notebook 05.

    ``variant`` (:func:`llmlab.dpo.variants`): ``main`` (``DPOConfig.beta``), ``beta_<b>``
    (the frontier's other betas), ``ipo``, ``conservative``, ``small_beta``, ``on_policy`` and
    ``off_policy`` (only the SFT model's own samples, or only the template-written pairs).
    """
    return get_dpo_runs(preset, [variant], root=root, progress=progress)[variant]


def get_dpo_runs(preset: Preset | str | None = None, variants=None, root: Path | None = None,
                 progress: bool = True) -> dict:
    """``{variant: Artifact}`` of :func:`get_dpo` for several variants (default: all of
    :func:`llmlab.dpo.variants`), checking the shared dependencies once (each check reads the
    import graph, a few seconds on 2 cores)."""
    from . import dpo as dpo_mod
    from .config import dpo_config

    p = _preset(preset)
    dc = dpo_config(p)
    known = dpo_mod.variants(dc)
    variants = list(known) if variants is None else list(variants)
    for v in variants:
        if v not in known:
            raise ValueError(f"unknown DPO variant {v!r}; expected one of {sorted(known)}")
    deps = [get_prefs(p, root=root), get_sft_model(p, root=root), get_tokenizer_artifact(p, root=root)]
    return {v: _dpo_artifact(p, dc, v, deps, root, progress) for v in variants}


def _dpo_artifact(p: Preset, dc, variant: str, deps: list, root, progress: bool) -> Artifact:
    from . import dpo as dpo_mod

    def build(tmp: Path) -> dict:
        from .device import pick_device

        device = pick_device()
        return dpo_mod.build_dpo(tmp, variant, dc, p.train, p.model, p.sft.template,
                                 get_tokenizer(p, root=root), load_prefs(p, root=root),
                                 load_sft_model(p, device, root=root), device, progress=progress)

    return ensure("dpo" if variant == "main" else f"dpo_{variant}", p.name,
                  [p.model, p.sft, p.train, dc], build, deps=deps,
                  code=code_of(dpo_mod.build_dpo), root=root)


def load_dpo_policy(preset: Preset | str | None = None, variant: str = "main", device=None,
                    root: Path | None = None):
    """The DPO policy (a :class:`~llmlab.model.GPT`) of :func:`get_dpo`, in eval mode."""
    from .device import pick_device
    from .train import load_checkpoint

    art = get_dpo(preset, variant, root=root)
    device = pick_device(device) if not hasattr(device, "type") else device
    model, _ = load_checkpoint(art.file("model.pt"), device=device)
    return model.eval()


# --- notebook 08: beyond RLHF (llmlab.beyond) ----------------------------------------------


def _beyond_deps(p: Preset, root) -> list:
    return [get_sft_model(p, root=root), get_reward_model(p, root=root),
            get_tokenizer_artifact(p, root=root)]


def _beyond_configs(p: Preset) -> list:
    from .config import beyond_config, dpo_config, ppo_config, reward_config

    return [p.world, p.sft, p.model, p.train, reward_config(p), ppo_config(p), dpo_config(p),
            beyond_config(p)]


def _sft_recipe_run(name: str, recipe, p: Preset, root, progress: bool) -> Artifact:
    """A notebook-08 run whose recipe takes ``(folder, BeyondConfig, PPOConfig, SFTConfig,
    TrainConfig, world, tokenizer, SFT model, reward model, device, progress)``: rejection
    sampling (:func:`llmlab.beyond.build_rft`) and critique-and-revise
    (:func:`llmlab.beyond.build_cai_sl`)."""
    from .config import beyond_config, ppo_config

    def build(tmp: Path) -> dict:
        from .device import pick_device

        device = pick_device()
        return recipe(tmp, beyond_config(p), ppo_config(p), p.sft, p.train, get_world(p),
                      get_tokenizer(p, root=root), load_sft_model(p, device, root=root),
                      load_reward_model(p, device, root=root), device, progress)

    return ensure(name, p.name, _beyond_configs(p), build, deps=_beyond_deps(p, root),
                  code=code_of(recipe), root=root)


def get_rft(preset: Preset | str | None = None, root: Path | None = None, progress: bool = True) -> Artifact:
    """Rejection-sampling fine-tuning (notebook 08, section 1), built by
    :func:`llmlab.beyond.build_rft`: ``model.pt`` and ``info`` with the kept replies' summary,
    losses, wall times and the held-out ``final_eval``."""
    from . import beyond

    return _sft_recipe_run("rft", beyond.build_rft, _preset(preset), root, progress)


def get_grpo(preset: Preset | str | None = None, root: Path | None = None, progress: bool = True,
             callback=None) -> Artifact:
    """The GRPO run (notebook 08, section 2), built by :func:`llmlab.beyond.build_grpo`:
    ``model.pt`` and ``info`` with the per-iteration ``history``, wall time and ``final_eval``."""
    from . import beyond
    from .config import beyond_config, ppo_config

    p = _preset(preset)

    def build(tmp: Path) -> dict:
        from .device import pick_device

        device = pick_device()
        return beyond.build_grpo(tmp, beyond_config(p), ppo_config(p), p.sft, get_world(p),
                                 get_tokenizer(p, root=root), load_sft_model(p, device, root=root),
                                 load_reward_model(p, device, root=root), device, progress, callback)

    return ensure("grpo", p.name, _beyond_configs(p), build, deps=_beyond_deps(p, root),
                  code=code_of(beyond.build_grpo), root=root)


def get_iterative_dpo(preset: Preset | str | None = None, root: Path | None = None,
                      progress: bool = True) -> Artifact:
    """Iterative (online) DPO (notebook 08, section 3), built by
    :func:`llmlab.beyond.build_iterative_dpo`: ``model.pt`` (the last round's policy) and
    ``info`` with each round's pairs, label agreement, wall time and held-out evaluation."""
    from . import beyond
    from .config import beyond_config, dpo_config, ppo_config

    p = _preset(preset)

    def build(tmp: Path) -> dict:
        from .device import pick_device

        device = pick_device()
        return beyond.build_iterative_dpo(tmp, beyond_config(p), dpo_config(p), ppo_config(p), p.sft,
                                          p.train, get_world(p), get_tokenizer(p, root=root),
                                          load_sft_model(p, device, root=root),
                                          load_reward_model(p, device, root=root), device, progress)

    return ensure("iterative_dpo", p.name, _beyond_configs(p), build, deps=_beyond_deps(p, root),
                  code=code_of(beyond.build_iterative_dpo), root=root)


def get_rlaif(preset: Preset | str | None = None, root: Path | None = None,
              progress: bool = True) -> Artifact:
    """AI feedback with a constitution (notebook 08, section 4), built by
    :func:`llmlab.beyond.build_rlaif`: ``model_ai.pt`` and ``model_annotator.pt`` (DPO on the
    AI labeler's and on notebook 05's labels of the same pairs) and ``info`` with every label
    and both runs' held-out evaluations."""
    from . import beyond
    from .config import beyond_config, dpo_config, ppo_config

    p = _preset(preset)
    deps = _beyond_deps(p, root) + [get_prefs(p, root=root)]

    def build(tmp: Path) -> dict:
        from .device import pick_device

        device = pick_device()
        return beyond.build_rlaif(tmp, beyond_config(p), dpo_config(p), ppo_config(p), p.sft, p.train,
                                  get_world(p), get_tokenizer(p, root=root), load_prefs(p, root=root),
                                  load_sft_model(p, device, root=root),
                                  load_reward_model(p, device, root=root), device, progress)

    return ensure("rlaif", p.name, _beyond_configs(p), build, deps=deps,
                  code=code_of(beyond.build_rlaif), root=root)


def get_cai_sl(preset: Preset | str | None = None, root: Path | None = None,
               progress: bool = True) -> Artifact:
    """The supervised half of Constitutional AI (notebook 08, section 4), built by
    :func:`llmlab.beyond.build_cai_sl`: ``model.pt`` (the SFT model fine-tuned on its own
    revisions) and ``info`` with every reply, critique and revision, the counts, wall times and
    the held-out ``final_eval``."""
    from . import beyond

    return _sft_recipe_run("cai_sl", beyond.build_cai_sl, _preset(preset), root, progress)


def load_beyond_policy(method: str, preset: Preset | str | None = None, device=None,
                       root: Path | None = None):
    """A policy of notebook 08 (a :class:`~llmlab.model.GPT`, eval mode): ``method`` is ``rft``,
    ``grpo``, ``iterative_dpo``, ``rlaif_ai``, ``rlaif_annotator`` or ``cai_sl``."""
    from .device import pick_device
    from .train import load_checkpoint

    arts = {"rft": (get_rft, "model.pt"), "grpo": (get_grpo, "model.pt"),
            "iterative_dpo": (get_iterative_dpo, "model.pt"), "rlaif_ai": (get_rlaif, "model_ai.pt"),
            "rlaif_annotator": (get_rlaif, "model_annotator.pt"), "cai_sl": (get_cai_sl, "model.pt")}
    if method not in arts:
        raise ValueError(f"unknown notebook-08 method {method!r}; expected one of {sorted(arts)}")
    get, name = arts[method]
    device = pick_device(device) if not hasattr(device, "type") else device
    model, _ = load_checkpoint(get(preset, root=root).file(name), device=device)
    return model.eval()
