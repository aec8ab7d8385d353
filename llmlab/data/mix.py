"""The data mix: how much of each source the model sees (notebook 01, section 5).

Cleaning changes the mix: filters remove far more web text than encyclopedia text. Training
runs then choose *mixing weights* on purpose (GPT-3 saw its Wikipedia 3.4 times per epoch of
the crawl, Brown et al. 2020, table 2.2). Here: the shares before and after cleaning
(:func:`source_shares`), and sampling documents by source weight (:func:`sample_by_weight`,
:func:`apply_mix`).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

SOURCES = ("wiki", "books", "forum", "code", "web")


def source_shares(docs: list[dict], by: str = "bytes") -> dict:
    """Share of each source in ``docs`` by ``"bytes"`` of text or by ``"docs"`` (sums to 1).

    >>> source_shares([{"source": "wiki", "text": "abc"}, {"source": "web", "text": "a"}])
    {'wiki': 0.75, 'web': 0.25}
    """
    if by not in ("bytes", "docs"):
        raise ValueError(f"by must be 'bytes' or 'docs', not {by!r}")
    c: Counter = Counter()
    for d in docs:
        c[d["source"]] += len(d["text"].encode("utf-8")) if by == "bytes" else 1
    total = sum(c.values())
    order = [s for s in SOURCES if s in c] + sorted(s for s in c if s not in SOURCES)
    return {s: c[s] / total for s in order} if total else {}


def sample_by_weight(docs: list[dict], weights: dict, n: int, seed: int = 0) -> list[dict]:
    """``n`` documents drawn with replacement, each with probability ∝ its source's weight.

    A source missing from ``weights`` gets weight 0 (never drawn). Every document of a source
    is equally likely, so the expected share of source s is w_s·N_s / Σ_t w_t·N_t.
    """
    w = np.array([float(weights.get(d["source"], 0.0)) for d in docs])
    if len(docs) == 0 or w.sum() <= 0:
        raise ValueError(f"no document has a positive weight (weights={weights})")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(docs), size=n, replace=True, p=w / w.sum())
    return [docs[i] for i in idx]


def apply_mix(docs: list[dict], weights: dict, seed: int = 0) -> list[dict]:
    """Repeat each source's documents ``weight`` times (fractions by sampling without
    replacement): the "epochs per source" view of a mix. Empty ``weights`` keeps ``docs``."""
    if not weights:
        return list(docs)
    rng = np.random.default_rng(seed)
    out = []
    for s in dict.fromkeys(d["source"] for d in docs):
        group = [d for d in docs if d["source"] == s]
        w = float(weights.get(s, 1.0))
        whole, frac = int(w), w - int(w)
        out += group * whole
        k = int(round(frac * len(group)))
        out += [group[i] for i in sorted(rng.choice(len(group), size=k, replace=False))]
    return out
