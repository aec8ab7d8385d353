"""The artifact chain: what each notebook needs, rebuilt through the cache when missing.

Each ``get_*`` function returns a checked :class:`~llmlab.artifacts.Artifact` (or an object
loaded from one), building it -- and whatever it depends on -- by calling the package's stage
functions. This is how any notebook opens on its own: notebook 06 on a fresh Colab asks for the
SFT model, which asks for the base model, which asks for the token files, and so on down to
the world's crawl.

==========  =================================  =======================================
artifact    built by                           used by
==========  =================================  =======================================
crawl       ``world.build_world`` +            notebook 01 (the data pipeline)
            ``world.write_warc``
corpus      ``data.pipeline.clean_crawl``      tokenizer, tokens; notebook 01
tokenizer   ``tokenizer.train_fast``           tokens, every model; notebooks 01-04
tokens      ``packing.write_token_files``      pretraining, the sweep; notebooks 01-03
base_model  ``train.train`` on ``GPT``         SFT; notebooks 02 and 04
sweep       ``scaling`` (IsoFLOP runs)         notebook 03
sft_data    ``sft.make_examples``              SFT; notebook 04
sft_model   ``sft.sft_train``                  notebook 04 (and later alignment stages)
==========  =================================  =======================================

Each stage registers itself below in the same pattern: a ``get_<name>(preset)`` that calls
:func:`llmlab.artifacts.ensure` with the stage's config, its dependencies and its code.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from . import world as world_mod
from .artifacts import Artifact, ensure
from .config import Preset, get_preset


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

    def build(tmp: Path) -> dict:
        w = get_world(p)
        stats = world_mod.write_warc(w, tmp / "crawl.warc.gz")
        world_mod.write_truth(w, tmp / "truth.jsonl.gz")
        return stats | world_mod.summary(w)

    return ensure("crawl", p.name, [p.world], build, code=[world_mod], root=root)


# --- notebook 01: the cleaned corpus (llmlab.data) ---------------------------------------


def get_corpus(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """The cleaned corpus (notebook 01, section 6): ``corpus.jsonl.gz``, one JSON document per
    line (``url``, ``source``, ``kind``, ``text``), built by
    :func:`llmlab.data.pipeline.clean_crawl` from :func:`get_crawl`; ``info`` is the pipeline's
    report (documents in and out of every step, scores against the world's ground truth).
    Read it with :func:`llmlab.data.pipeline.read_corpus`."""
    from . import data as data_pkg
    from .data import crawl, dedup, extract, mix, pipeline, quality

    p = _preset(preset)
    crawl_art = get_crawl(p, root=root)

    def build(tmp: Path) -> dict:
        truth = world_mod.read_truth(crawl_art.file("truth.jsonl.gz"))
        docs, report = pipeline.clean_crawl(crawl_art.file("crawl.warc.gz"), p.data, truth)
        pipeline.write_corpus(docs, tmp / pipeline.CORPUS_FILE)
        return report | {"n_docs": len(docs),
                         "n_bytes": sum(len(d["text"].encode("utf-8")) for d in docs)}

    return ensure("corpus", p.name, [p.world, p.data], build, deps=[crawl_art],
                  code=[data_pkg, crawl, extract, dedup, quality, mix, pipeline], root=root)


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
    :func:`llmlab.tokenizer.train_fast` on the cleaned corpus, showing its progress."""
    import time

    from . import tokenizer as tokenizer_mod

    p = _preset(preset)
    corpus = get_corpus(p, root=root)  # noqa: F821 (defined in the corpus section above)

    def build(tmp: Path) -> dict:
        texts = _corpus_texts(corpus)
        t0 = time.perf_counter()
        pattern = tokenizer_mod.split_pattern(p.tokenizer.split_pattern)
        tok = tokenizer_mod.Tokenizer.train(texts, p.tokenizer.vocab_size, pattern, progress=True)
        seconds = time.perf_counter() - t0
        tok.save(tmp / "tokenizer.json")
        return {"vocab_size": tok.vocab_size, "n_merges": len(tok.merges),
                "n_special": len(tok.special_tokens), "train_seconds": round(seconds, 3),
                "n_docs": len(texts), "corpus_bytes": sum(len(t.encode("utf-8")) for t in texts)}

    return ensure("tokenizer", p.name, [p.tokenizer], build, deps=[corpus], code=[tokenizer_mod],
                  root=root)


def get_tokenizer(preset: Preset | str | None = None, root: Path | None = None):
    """The byte-level BPE tokenizer of ``preset`` (notebook 01, "Tokenizer"): a
    :class:`llmlab.tokenizer.Tokenizer` with ``vocab_size == preset.tokenizer.vocab_size``,
    loaded from :func:`get_tokenizer_artifact`."""
    art = get_tokenizer_artifact(preset, root=root)
    return _load_tokenizer(str(art.file("tokenizer.json")), art.hash)


def get_tokens(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """The packed token files of ``preset`` (notebook 01, "Packing"): ``train.bin`` and
    ``val.bin`` (uint16, documents joined by end-of-text, split by document with
    ``DataConfig.val_frac``); ``info`` has the token counts and bytes per token. Read them with
    :func:`llmlab.packing.load_tokens`."""
    from tqdm.auto import tqdm

    from . import packing as packing_mod
    from . import tokenizer as tokenizer_mod

    p = _preset(preset)
    corpus = get_corpus(p, root=root)  # noqa: F821 (defined in the corpus section above)
    tok_art = get_tokenizer_artifact(p, root=root)
    tok = _load_tokenizer(str(tok_art.file("tokenizer.json")), tok_art.hash)

    def build(tmp: Path) -> dict:
        texts = _corpus_texts(corpus)
        docs = [tok.encode_ordinary(t) for t in tqdm(texts, desc="encoding documents", unit="doc")]
        info = packing_mod.write_token_files(docs, tok.eot_id, tmp, p.data.val_frac)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        n_tokens = sum(len(d) for d in docs)
        return info | {"n_docs": len(docs), "corpus_bytes": n_bytes, "doc_tokens": n_tokens,
                       "bytes_per_token": round(n_bytes / max(n_tokens, 1), 4),
                       "vocab_size": tok.vocab_size, "eot_id": tok.eot_id, "pad_id": tok.pad_id,
                       "val_frac": p.data.val_frac}

    return ensure("tokens", p.name, [p.tokenizer, p.data], build, deps=[corpus, tok_art],
                  code=[tokenizer_mod, packing_mod], root=root)


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
    docs = read_corpus(get_corpus(p, root=root))  # noqa: F821 (notebook 01's section above)
    train_idx, val_idx = packing_mod.split_documents(len(docs), p.data.val_frac, 0)
    by_url = {pg.url: pg for pg in get_world(p).pages}
    idx = train_idx if split == "train" else val_idx
    return [by_url[docs[i]["url"]] for i in idx if docs[i].get("url") in by_url]


def renderer_entropy_bits_per_byte(preset: Preset | str | None = None, pages=None,
                                   root: Path | None = None) -> float:
    """The world renderer's entropy per byte of main text over ``pages`` (default: the
    validation pages): the data's irreducible bits per byte given the knowledge base
    (``World.entropy_bits_per_byte`` restricted to these pages; a copy counts its original's bits)."""
    w = get_world(preset)
    pages = validation_pages(preset, root=root) if pages is None else pages
    by_url = {pg.url: pg for pg in w.pages}
    bits = sum(pg.bits if not pg.copy_type else by_url[pg.copy_of].bits for pg in pages)
    nbytes = sum(len(pg.text.encode("utf-8")) + 1 for pg in pages)
    return bits / max(nbytes, 1)


def pretraining_fact_counts(preset: Preset | str | None = None, root: Path | None = None):
    """How many times each fact id is stated in the pretraining (training-split) pages."""
    return get_world(preset).fact_counts(pretraining_pages(preset, root=root))


def train_base_model(preset: Preset | str | None = None, root: Path | None = None,
                     callback=None, progress: bool = True, device=None):
    """Train the base model of ``preset`` from scratch on its token files (notebook 02, section 4).

    Returns ``(model, TrainResult)``. :func:`get_base_model` stores what this returns; the
    benchmark ``benchmarks/base_model.py`` times it.
    """
    from . import model as model_mod
    from . import packing as packing_mod
    from . import train as train_mod
    from .device import seed_everything

    p = _preset(preset)
    tokens = get_tokens(p, root=root)  # noqa: F821 (notebook 01's section above)
    train_data = packing_mod.load_tokens(tokens.file("train.bin"))
    val_data = packing_mod.load_tokens(tokens.file("val.bin"))
    seed_everything(p.train.seed)
    model = model_mod.GPT(p.model)
    result = train_mod.train(model, train_data, val_data, p.train, device=device,
                             callback=callback, progress=progress)
    return model, result


def get_base_model(preset: Preset | str | None = None, root: Path | None = None,
                   callback=None, progress: bool = True) -> Artifact:
    """The pretrained base model (notebook 02): ``model.pt`` (a checkpoint with its config,
    :func:`llmlab.train.save_checkpoint`) and ``train_log.json`` (the :class:`TrainResult`:
    losses per step, validation losses, tokens/s, MFU, wall time). ``callback`` and ``progress``
    are passed to :func:`llmlab.train.train` when the model has to be trained."""
    import json

    from . import model as model_mod
    from . import train as train_mod
    from .artifacts import atomic_write_text

    p = _preset(preset)
    tokens = get_tokens(p, root=root)  # noqa: F821 (notebook 01's section above)

    def build(tmp: Path) -> dict:
        model, res = train_base_model(p, root=root, callback=callback, progress=progress)
        train_mod.save_checkpoint(tmp / "model.pt", model.cpu(), state={"step": res.steps})
        atomic_write_text(tmp / "train_log.json", json.dumps(res.to_dict()))
        return {"steps": res.steps, "tokens": res.tokens, "final_train_loss": res.train_losses[-1],
                "val_loss": res.val_losses[-1][1], "tokens_per_sec": round(res.tokens_per_sec, 1),
                "mfu": round(res.mfu, 4), "wall_seconds": round(res.wall_seconds, 2),
                "precision": res.precision, "params": model.num_params(),
                "params_with_embeddings": model.num_params(non_embedding=False)}

    return ensure("base_model", p.name, [p.model, p.train], build, deps=[tokens],
                  code=[model_mod, train_mod.train, train_mod.configure_optimizer,
                        train_mod.param_groups, train_mod.lr_at, train_mod.estimate_loss],
                  root=root)


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
    rows and the config). Built by :func:`llmlab.scaling.run_sweep` on the preset's token files
    with ``ScalingConfig``; ``info`` has the wall time. Read the rows back with
    :func:`llmlab.scaling.read_sweep_csv`."""
    import json
    import time

    from . import model as model_mod
    from . import scaling as scaling_mod
    from . import train as train_mod
    from .artifacts import atomic_write_text
    from .config import TrainConfig, config_dict
    from .packing import load_tokens

    p = _preset(preset)
    tokens = get_tokens(p, root=root)

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        rows = scaling_mod.run_sweep(p.scaling, p.model, TrainConfig(),
                                     load_tokens(tokens.file("train.bin")),
                                     load_tokens(tokens.file("val.bin")))
        seconds = time.perf_counter() - t0
        header = (f"IsoFLOP sweep of llmlab, preset {p.name}: llmlab.scaling.run_sweep\n"
                  f"loss = final validation loss in nats per token of this preset's tokenizer")
        atomic_write_text(tmp / "sweep.csv", scaling_mod.rows_to_csv(rows, header))
        atomic_write_text(tmp / "sweep.json", json.dumps(
            {"preset": p.name, "scaling": config_dict(p.scaling), "rows": rows}, indent=1))
        return {"runs": len(rows), "sweep_seconds": round(seconds, 1)}

    # only the code that trains and records the runs (editing the fits does not rerun the sweep)
    code = [scaling_mod.plan_sweep, scaling_mod.run_sweep, scaling_mod._run,
            scaling_mod.compute_params, scaling_mod.forward_flops_breakdown,
            scaling_mod.train_flops_per_token, scaling_mod.rows_to_csv, model_mod, train_mod]
    # the runs take their optimiser settings from TrainConfig's defaults (weight decay, clipping,
    # cosine floor) and everything else from ScalingConfig, so tuning the preset's pretraining
    # run (notebook 02) does not rerun the sweep
    return ensure("sweep", p.name, [p.scaling, p.model, TrainConfig()], build, deps=[tokens],
                  code=code, root=root)


# --- notebook 04: the SFT model (llmlab.sft) ----------------------------------------------


def get_sft_data(preset: Preset | str | None = None, root: Path | None = None) -> Artifact:
    """Notebook 04's instruction data (section 1): ``train.jsonl`` (``SFTConfig.n_large``
    conversations from :func:`llmlab.sft.make_examples`; the first ``n_small`` are the small
    dataset), ``val.jsonl`` (conversations about held-out facts and entities, for the
    validation loss) and ``eval.jsonl`` (the held-out prompts of :func:`llmlab.sft.eval_items`)."""
    import json

    from . import sft as sft_mod
    from .artifacts import atomic_write_text

    p = _preset(preset)
    c = p.sft

    def build(tmp: Path) -> dict:
        w = get_world(p)
        split = sft_mod.split_world(w, c.eval_frac, c.seed)
        train = sft_mod.make_examples(w, split, c.n_large, c.seed, c.max_story_chars)
        val = sft_mod.make_examples(w, sft_mod.heldout_split(split), c.n_val, c.seed + 1,
                                    c.max_story_chars)
        items = sft_mod.eval_items(w, split, c.max_story_chars)
        for name, rows in (("train", train), ("val", val), ("eval", items)):
            atomic_write_text(tmp / f"{name}.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        kinds = {}
        for r in train:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        return {"n_train": len(train), "n_val": len(val), "n_eval": len(items), "train_kinds": kinds,
                "eval_facts": len(split.eval_facts), "eval_unknown": len(split.eval_unknown),
                "eval_decline": len(split.eval_decline)}

    return ensure("sft_data", p.name, [p.world, c], build, code=[sft_mod], root=root)


def load_sft_data(preset: Preset | str | None = None, root: Path | None = None) -> dict:
    """``{"train", "val", "eval"}``: the lists of conversations of :func:`get_sft_data`."""
    import json

    art = get_sft_data(preset, root=root)
    return {name: [json.loads(line) for line in art.file(f"{name}.jsonl").read_text(
        encoding="utf-8").splitlines()] for name in ("train", "val", "eval")}


def get_sft_model(preset: Preset | str | None = None, variant: str = "main",
                  root: Path | None = None) -> Artifact:
    """A fine-tuned model (notebook 04): ``model.pt`` (a :func:`llmlab.train.save_checkpoint`)
    and ``info`` with its losses, wall time and pretraining validation loss before and after.

    ``variant`` (:data:`llmlab.sft.VARIANTS`): ``main`` (the large dataset, loss on replies,
    ``SFTConfig.lr``), ``nomask`` (loss on every token, section 3), ``high_lr``
    (``SFTConfig.high_lr``, section 4), ``small`` (the first ``n_small`` conversations, section 5).
    """
    import time

    from . import packing as packing_mod
    from . import sft as sft_mod
    from . import train as train_mod

    p = _preset(preset)
    c = p.sft
    if variant not in sft_mod.VARIANTS:
        raise ValueError(f"unknown SFT variant {variant!r}; expected one of {sorted(sft_mod.VARIANTS)}")
    v = sft_mod.VARIANTS[variant]
    data_art = get_sft_data(p, root=root)
    base_art = get_base_model(p, root=root)  # noqa: F821 (notebook 02's section above)
    tok_art = get_tokenizer_artifact(p, root=root)
    tokens_art = get_tokens(p, root=root)

    def build(tmp: Path) -> dict:
        from .device import pick_device, seed_everything

        seed_everything(c.seed)
        device = pick_device()
        tok = get_tokenizer(p, root=root)
        data = load_sft_data(p, root=root)
        train = data["train"][:c.n_small] if v["data"] == "small" else data["train"]
        block = p.model.block_size
        train_enc, dropped = sft_mod.encode_examples(train, tok, c.template, block, v["train_on_prompt"])
        val_enc, _ = sft_mod.encode_examples(data["val"], tok, c.template, block, v["train_on_prompt"])
        model = load_base_model(p, device=device, root=root)  # noqa: F821
        val_tokens = packing_mod.load_tokens(tokens_art.file("val.bin"))
        pre_before = train_mod.estimate_loss(model, val_tokens, p.train, device)
        lr = c.high_lr if v["lr"] == "high" else c.lr
        cfg = sft_mod.sft_train_config(c, p.train, lr=lr)
        t0 = time.perf_counter()
        res = sft_mod.sft_train(model, train_enc, val_enc, cfg, tok.pad_id, device=device)
        seconds = time.perf_counter() - t0
        pre_after = train_mod.estimate_loss(model, val_tokens, p.train, device)
        train_mod.save_checkpoint(tmp / "model.pt", model)
        return {"variant": variant, "lr": lr, "n_train": len(train_enc), "dropped": dropped,
                "train_on_prompt": v["train_on_prompt"], "sft_seconds": round(seconds, 2),
                "train_losses": [round(x, 4) for x in res.train_losses],
                "val_losses": [[s, round(x, 4)] for s, x in res.val_losses],
                "pretrain_val_before": round(pre_before, 4), "pretrain_val_after": round(pre_after, 4)}

    name = "sft" if variant == "main" else f"sft_{variant}"
    return ensure(name, p.name, [p.sft, p.model], build, deps=[data_art, base_art, tok_art, tokens_art],
                  code=[sft_mod], root=root)


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
    facts, entities and requests) and ``fresh.jsonl`` (one sampled SFT reply to each of
    ``PrefConfig.n_fresh`` further held-out prompts, with its gold score). ``info`` holds
    :func:`llmlab.prefs.pair_summary` of both splits."""
    import json

    from . import prefs as prefs_mod
    from . import sft as sft_mod
    from .artifacts import atomic_write_text
    from .config import pref_config

    p = _preset(preset)
    c = pref_config(p)
    sft_art = get_sft_model(p, root=root)
    tok_art = get_tokenizer_artifact(p, root=root)

    def build(tmp: Path) -> dict:
        from .device import pick_device, seed_everything

        seed_everything(c.seed)
        w = get_world(p)
        tok = get_tokenizer(p, root=root)
        model = load_sft_model(p, pick_device(), root=root)
        split = sft_mod.split_world(w, p.sft.eval_frac, p.sft.seed)
        mix = dict(c.mix)
        n_val_prompts = max(8, c.on_policy_prompts * c.n_val // c.n_train)

        def candidates(n, seed, eval_side, samples):
            items = prefs_mod.on_policy_items(split, n, seed, eval_side)
            return prefs_mod.on_policy_candidates(model, tok, items, samples, c.sample_temperature,
                                                  p.sft.max_new_tokens, p.sft.template, seed,
                                                  progress=True)

        train = prefs_mod.make_pairs(w, split, c.n_train, mix, c.label_temperature, c.seed, False,
                                     candidates(c.on_policy_prompts, c.seed, False, c.on_policy_samples))
        val = prefs_mod.make_pairs(w, split, c.n_val, mix, c.label_temperature, c.seed + 1, True,
                                   candidates(n_val_prompts, c.seed + 1, True, c.on_policy_samples))
        values = prefs_mod.relation_values(w)
        fresh = []
        for item, replies in candidates(c.n_fresh, c.seed + 2, True, 1):
            r = replies[0]
            fresh.append({"messages": item["messages"], "item": {k: v for k, v in item.items()
                                                                if k != "messages"},
                          "reply": r["text"], "stopped": r["stopped"],
                          "gold": prefs_mod.gold_score(item, r["text"], values).score})
        for name, rows in (("train", train), ("val", val), ("fresh", fresh)):
            atomic_write_text(tmp / f"{name}.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return {"train": prefs_mod.pair_summary(train, c.label_temperature),
                "val": prefs_mod.pair_summary(val, c.label_temperature), "n_fresh": len(fresh)}

    return ensure("prefs", p.name, [p.world, p.sft, c], build, deps=[sft_art, tok_art],
                  code=[prefs_mod, sft_mod.split_world, sft_mod.tokenize_chat], root=root)


def load_prefs(preset: Preset | str | None = None, root: Path | None = None) -> dict:
    """``{"train", "val", "fresh"}``: the lists of :func:`get_prefs`."""
    import json

    art = get_prefs(preset, root=root)
    return {name: [json.loads(line) for line in art.file(f"{name}.jsonl").read_text(
        encoding="utf-8").splitlines()] for name in ("train", "val", "fresh")}


# the reward-model runs notebook 05 compares: (initial weights, budget)
REWARD_VARIANTS = {"main": ("config", "max_steps"), "sft_short": ("sft", "compare_steps"),
                   "base_short": ("base", "compare_steps"), "random_short": ("random", "compare_steps")}


def get_reward_model(preset: Preset | str | None = None, variant: str = "main",
                     root: Path | None = None, progress: bool = True) -> Artifact:
    """A reward model (notebook 05): ``model.pt`` (a reward :class:`~llmlab.model.ScalarModel`
    checkpoint) and ``info`` with its training curve (held-out accuracy per evaluation, on the
    loop's fixed validation batches), wall time and pairs seen.

    ``variant`` (:data:`REWARD_VARIANTS`): ``main`` (``RewardConfig.init`` weights,
    ``max_steps``), and ``sft_short`` / ``base_short`` / ``random_short`` (section 5: the same
    training for ``compare_steps`` from SFT, base or random weights).
    """
    import time

    from . import reward as reward_mod
    from . import train as train_mod
    from .config import reward_config

    p = _preset(preset)
    rc = reward_config(p)
    if variant not in REWARD_VARIANTS:
        raise ValueError(f"unknown reward variant {variant!r}; expected one of {sorted(REWARD_VARIANTS)}")
    init, budget = REWARD_VARIANTS[variant]
    init = rc.init if init == "config" else init
    steps = getattr(rc, budget)
    prefs_art = get_prefs(p, root=root)
    deps = [prefs_art, get_tokenizer_artifact(p, root=root)]
    deps.append(get_sft_model(p, root=root) if init == "sft"
                else get_base_model(p, root=root))  # noqa: F821 (notebook 02's section above)

    def build(tmp: Path) -> dict:
        from .device import pick_device, seed_everything

        device = pick_device()
        tok = get_tokenizer(p, root=root)
        data = load_prefs(p, root=root)
        block = p.model.block_size
        train_enc, _ = reward_mod.encode_pairs(data["train"], tok, p.sft.template, block)
        val_enc, _ = reward_mod.encode_pairs(data["val"], tok, p.sft.template, block)
        lm = (load_sft_model(p, root=root) if init == "sft" else
              load_base_model(p, root=root) if init == "base" else None)  # noqa: F821
        seed_everything(rc.seed)
        model = reward_mod.reward_model_from(lm, p.model)
        cfg = reward_mod.reward_train_config(rc, p.train, steps)
        t0 = time.perf_counter()
        res = reward_mod.train_reward_model(model, train_enc, val_enc, cfg, tok.pad_id, device,
                                            progress=progress)
        seconds = time.perf_counter() - t0
        r_w, r_l = reward_mod.score_pairs(model, val_enc, tok.pad_id)
        k, n = reward_mod.pair_accuracy(r_w, r_l)
        train_mod.save_checkpoint(tmp / "model.pt", model.cpu())
        return {"variant": variant, "init": init, "steps": steps, "batch_size": rc.batch_size,
                "n_train": len(train_enc), "n_val": len(val_enc), "train_seconds": round(seconds, 2),
                "val_accuracy": k / n, "val_correct": k,
                "curve": [[s, m.get("accuracy"), m.get("margin")] for s, m in res.val_metrics],
                "val_losses": [[s, round(x, 4)] for s, x in res.val_losses],
                "train_losses": [round(x, 4) for x in res.train_losses]}

    return ensure("reward" if variant == "main" else f"reward_{variant}", p.name,
                  [p.model, p.sft, rc], build, deps=deps, code=[reward_mod], root=root)


def load_reward_model(preset: Preset | str | None = None, device=None, variant: str = "main",
                      root: Path | None = None):
    """The reward :class:`~llmlab.model.ScalarModel` of :func:`get_reward_model`, in eval mode."""
    from .device import pick_device
    from .train import load_checkpoint

    art = get_reward_model(preset, variant, root=root)
    device = pick_device(device) if not hasattr(device, "type") else device
    model, _ = load_checkpoint(art.file("model.pt"), device=device)
    return model.eval()
