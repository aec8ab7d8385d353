"""The data mix: how much of each source the model sees (notebook 01, section 5).

Cleaning changes the mix: filters remove far more web text than encyclopedia text. Training
runs then choose *mixing weights* on purpose (GPT-3 saw its Wikipedia 3.4 times per epoch of
the crawl, Brown et al. 2020, table 2.2). Here: the shares before and after cleaning
(:func:`source_shares`), and two ways to apply weights per source: drawing documents with
probability by source weight (:func:`sample_by_weight`), and showing each source a set number of
epochs (:func:`apply_mix`, what the pipeline runs; :func:`mix_table` says what it changed).
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


def copies_per_doc(docs: list[dict], weights: dict, seed: int = 0) -> np.ndarray:
    """How many times each document appears in the mixed corpus, shape (N,).

    A source's weight is its *epochs*: with weight w every document of the source appears
    int(w) times, and a random round(frac(w)·N_s) of them once more (sampled without
    replacement, so fractions are exact per source). A source missing from ``weights``
    gets 1.0: the natural mix, every document once.

    >>> docs = [{"source": "wiki"}, {"source": "web"}, {"source": "web"}]
    >>> copies_per_doc(docs, {"wiki": 3.0, "web": 0.5}).tolist()   # one of the 2 web pages, seeded
    [3, 0, 1]
    """
    rng = np.random.default_rng(seed)
    copies = np.zeros(len(docs), dtype=np.int64)
    for s in dict.fromkeys(d["source"] for d in docs):
        idx = np.array([i for i, d in enumerate(docs) if d["source"] == s])
        w = float(weights.get(s, 1.0))
        if w < 0:
            raise ValueError(f"mix weight of {s!r} is {w}; weights are epochs, at least 0")
        whole, frac = int(w), w - int(w)
        copies[idx] = whole
        k = int(round(frac * len(idx)))
        if k:
            copies[np.sort(rng.choice(idx, size=k, replace=False))] += 1
    return copies


def apply_mix(docs: list[dict], weights: dict, seed: int = 0) -> list[dict]:
    """The mixed corpus: each document :func:`copies_per_doc` times, as successive passes
    (pass k holds, in corpus order, every document with more than k copies).

    The "epochs per source" view of a mix (GPT-3's table 2.2): weight 2 shows a source twice
    per pass over the corpus, 0.5 shows half of it. With every weight 1 (or ``weights`` empty)
    the output is ``docs`` itself, in the same order.
    """
    copies = copies_per_doc(docs, weights, seed)
    out = []
    for k in range(int(copies.max()) if len(docs) else 0):
        out += [d for d, c in zip(docs, copies) if c > k]
    return out


def mix_table(docs: list[dict], weights: dict, count=None, seed: int = 0) -> dict:
    """What a mix does to each source: documents and units (``count(text)``; bytes by default,
    tokens with a tokenizer's length) before and after, the epochs and the shares of units.

    >>> docs = [{"source": "wiki", "text": "ab"}, {"source": "web", "text": "abcdef"}]
    >>> t = mix_table(docs, {"wiki": 2.0})
    >>> t["wiki"]["units_after"], round(t["wiki"]["share_after"], 2), t["web"]["epochs"]
    (4, 0.4, 1.0)
    """
    count = count or (lambda t: len(t.encode("utf-8")))
    copies = copies_per_doc(docs, weights, seed)
    units = np.array([count(d["text"]) for d in docs], dtype=np.int64)
    total_b, total_a = units.sum(), (units * copies).sum()
    out = {}
    for s in [s for s in SOURCES if any(d["source"] == s for d in docs)] + \
            sorted({d["source"] for d in docs} - set(SOURCES)):
        m = np.array([d["source"] == s for d in docs])
        ub, ua = int(units[m].sum()), int((units[m] * copies[m]).sum())
        out[s] = {"docs": int(m.sum()), "units": ub, "share_before": float(ub / total_b) if total_b else 0.0,
                  "epochs": float(weights.get(s, 1.0)), "docs_after": int(copies[m].sum()),
                  "units_after": ua, "share_after": float(ua / total_a) if total_a else 0.0}
    return out
