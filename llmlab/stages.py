"""The artifact chain: what each notebook needs, rebuilt through the cache when missing.

Each ``get_*`` function returns a checked :class:`~llmlab.artifacts.Artifact` (or an object
loaded from one), building it -- and whatever it depends on -- by calling the package's stage
functions. This is how any notebook opens on its own: notebook 06 on a fresh Colab asks for the
SFT model, which asks for the base model, which asks for the token files, and so on down to
the world's crawl.

=========  ===========================  ===============================
artifact   built by                     used by
=========  ===========================  ===============================
crawl      ``world.build_world`` +      notebook 01 (the data pipeline)
           ``world.write_warc``
=========  ===========================  ===============================

Later stages register themselves below in the same pattern: a ``get_<name>(preset)`` that
calls :func:`llmlab.artifacts.ensure` with the stage's config and its dependencies.
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


# --- notebook 03: the IsoFLOP sweep (llmlab.scaling) --------------------------------------


# --- notebook 04: the SFT model (llmlab.sft) ----------------------------------------------

