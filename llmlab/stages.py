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


# --- notebook 02: the base model (llmlab.model, llmlab.train) -----------------------------


# --- notebook 03: the IsoFLOP sweep (llmlab.scaling) --------------------------------------


# --- notebook 04: the SFT model (llmlab.sft) ----------------------------------------------

