"""The whole data pipeline, WARC to cleaned corpus (notebook 01, section 6).

:func:`clean_crawl` runs every step of the notebook on a WARC file, in order, and counts what
each step keeps:

1. **crawl**: stream the HTML responses (:mod:`llmlab.data.crawl`);
2. **extract**: main text (:mod:`llmlab.data.extract`); empty pages are dropped;
3. **exact dedup**: a hash of the normalised text (:func:`llmlab.data.dedup.exact_dedup`);
4. **near dedup**: MinHash + LSH + confirmation + clusters (:func:`llmlab.data.dedup.near_dedup`);
5. **quality**: the rules (:mod:`llmlab.data.quality`), and the classifier if configured;
6. **mix**: mixing weights per source (:mod:`llmlab.data.mix`).

With the world's ground truth it also measures itself: extraction F1, duplicate-pair precision
and recall against the world's duplicate clusters, and the quality filter's precision and recall
against the world's labels. :func:`build_corpus` is the recipe ``llmlab.stages.get_corpus``
runs on a preset's crawl; it stores the result as ``corpus.jsonl.gz`` (read it with
:func:`read_corpus`).
"""
from __future__ import annotations

import gzip
import json
import random
import time
from pathlib import Path

import numpy as np

from ..config import DataConfig
from . import crawl, dedup, extract, mix, quality

CORPUS_FILE = "corpus.jsonl.gz"


def rules_from_config(cfg: DataConfig) -> quality.QualityRules:
    """The quality thresholds the pipeline uses: Gopher's, with ``cfg``'s tuned values."""
    return quality.QualityRules(min_words=cfg.min_words, min_stop_words=cfg.min_stop_words,
                                max_top_2gram=cfg.max_top_2gram, max_dup_5gram=cfg.max_dup_5gram)


def _source_of(url: str, truth: dict | None) -> tuple[str, str]:
    rec = truth.get(url) if truth else None
    return (rec["source"], rec["kind"]) if rec else ("web", "")


def clean_crawl(warc_path: str | Path, cfg: DataConfig = DataConfig(),
                truth: list[dict] | None = None, progress: bool = True) -> tuple[list, dict]:
    """Run every step on a WARC file; return the kept documents and a report of every step.

    Documents are ``{"url", "source", "kind", "text"}``. ``truth`` (the world's records) is used
    only to label documents with their source and kind and to score the steps, never to decide
    what is kept. A real Common Crawl file works the same (source "web", no scores).
    """
    from tqdm.auto import tqdm

    t_all = time.perf_counter()
    truth_by_url = {r["url"]: r for r in truth} if truth else None
    steps, timing = [], {}

    def step(name, n_in, n_out, t0):
        timing[name] = round(time.perf_counter() - t0, 3)
        steps.append({"step": name, "docs_in": n_in, "docs_out": n_out})

    # 1) crawl
    t0 = time.perf_counter()
    stats = crawl.CrawlStats()
    pages = crawl.read_pages(warc_path, stats)
    step("crawl", stats.records, len(pages), t0)
    # 2) extract
    t0 = time.perf_counter()
    if cfg.extractor not in extract.EXTRACTORS:
        raise ValueError(f"DataConfig.extractor={cfg.extractor!r}; expected one of "
                         f"{sorted(extract.EXTRACTORS)}")
    fn = extract.EXTRACTORS[cfg.extractor]
    docs, all_docs = [], []
    for pg in tqdm(pages, desc=f"extracting ({cfg.extractor})", unit="page", disable=not progress,
                   mininterval=1.0):
        ex = fn(pg["html"]) if cfg.extractor != "simple" else \
            extract.extract_simple(pg["html"], cfg.max_link_density)
        src, kind = _source_of(pg["url"], truth_by_url)
        d = {"url": pg["url"], "source": src, "kind": kind, "text": ex.text.strip(),
             "is_code": ex.is_code}
        all_docs.append(d)
        if d["text"]:
            docs.append(d)
    step("extract", len(pages), len(docs), t0)
    report: dict = {"crawl": {"records": stats.records, "responses": stats.responses,
                              "malformed": stats.malformed, "errors": stats.errors[:20],
                              "charsets": _count(p["charset"] for p in pages)}}
    if truth_by_url:
        report["extraction"] = extract.score_extractor(
            pages, truth_by_url, lambda h: extract.extract_simple(h, cfg.max_link_density)
            if cfg.extractor == "simple" else fn(h))
    # 3) exact dedup
    t0 = time.perf_counter()
    keep, groups = dedup.exact_dedup([d["text"] for d in docs])
    exact_label = np.empty(len(docs), dtype=np.int64)
    for g in groups.values():
        exact_label[g] = g[0]
    after_exact = [docs[i] for i in keep]
    step("exact_dedup", len(docs), len(after_exact), t0)
    # 4) near dedup
    t0 = time.perf_counter()
    nd = dedup.near_dedup([d["text"] for d in after_exact], cfg.shingle_n, cfg.num_perm,
                          cfg.lsh_bands, cfg.jaccard_threshold, cfg.dedup_confirm)
    after_near = [after_exact[i] for i in nd.keep]
    step("near_dedup", len(after_exact), len(after_near), t0)
    report["dedup"] = {"exact_removed": len(docs) - len(after_exact),
                       "near_removed": nd.removed, "lsh_candidates": len(nd.candidates),
                       "confirmed_pairs": len(nd.confirmed)}
    if truth_by_url:
        # duplicate clusters over all extracted docs: exact group, then near-dup cluster
        near_of = {keep[i]: keep[int(nd.labels[i])] for i in range(len(keep))}
        labels = [near_of[int(exact_label[i])] for i in range(len(docs))]
        good = [i for i, d in enumerate(docs) if truth_by_url[d["url"]]["quality"] == "good"]
        pred = dedup.cluster_pairs([labels[i] for i in good])
        true = dedup.cluster_pairs([truth_by_url[docs[i]["url"]]["cluster"] for i in good])
        report["dedup"]["vs_world_clusters"] = dedup.pair_prf(pred, true)
        kept_clusters = _count(truth_by_url[d["url"]]["cluster"] for d in after_near
                               if truth_by_url[d["url"]]["quality"] == "good")
        report["dedup"]["world_clusters_with_copies_left"] = sum(n > 1 for n in kept_clusters.values())
    # 5) quality
    t0 = time.perf_counter()
    rules = rules_from_config(cfg)
    fails = [quality.rule_failures(d["text"], rules, d["is_code"]) for d in after_near]
    after_rules = [d for d, f in zip(after_near, fails) if not f]
    step("quality_rules", len(after_near), len(after_rules), t0)
    report["quality"] = {"rule_removals": _count(f[0] for f in fails if f),
                         "rules": quality.asdict(rules)}
    after_quality = after_rules
    if cfg.use_classifier:
        t0 = time.perf_counter()
        clf = train_reference_classifier(after_near, cfg, progress=progress)
        scores = clf.score([d["text"] for d in after_rules])
        after_quality = [d for d, s in zip(after_rules, scores) if s >= cfg.classifier_threshold]
        step("quality_classifier", len(after_rules), len(after_quality), t0)
    if truth_by_url:
        kept = {d["url"] for d in after_quality}
        is_bad = [truth_by_url[d["url"]]["quality"] == "bad" for d in after_near]
        report["quality"]["vs_labels"] = quality.removal_prf(
            [d["url"] not in kept for d in after_near], is_bad)
    # 6) mix
    t0 = time.perf_counter()
    out = mix.apply_mix(after_quality, dict(cfg.mix_weights))
    step("mix", len(after_quality), len(out), t0)
    report["mix"] = {"before": mix.source_shares(docs), "after": mix.source_shares(out),
                     "docs_by_source_after": _count(d["source"] for d in out)}
    report["steps"] = steps
    report["seconds"] = timing | {"total": round(time.perf_counter() - t_all, 3)}
    report["retained_frac"] = round(len(out) / max(len(pages), 1), 4)
    return [{k: d[k] for k in ("url", "source", "kind", "text")} for d in out], report


def train_reference_classifier(docs: list[dict], cfg: DataConfig, seed: int = 0,
                               progress: bool = False):
    """The fastText-style classifier: ``cfg.reference_sources`` (label 1) against an equally
    large random sample of all documents, "random web text" (label 0)."""
    pos = [d["text"] for d in docs if d["source"] in cfg.reference_sources]
    rng = random.Random(seed)
    neg = [d["text"] for d in rng.sample(docs, min(len(docs), len(pos)))]
    return quality.train_classifier(pos, neg, seed=seed, progress=progress)


def _count(items) -> dict:
    out: dict = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def build_corpus(folder: str | Path, warc_path: str | Path, truth: list[dict] | None,
                 cfg: DataConfig) -> dict:
    """The recipe of the ``corpus`` artifact (notebook 01, section 6): :func:`clean_crawl` on
    a WARC file, the kept documents written to ``folder/corpus.jsonl.gz``; returns the report."""
    docs, report = clean_crawl(warc_path, cfg, truth)
    write_corpus(docs, Path(folder) / CORPUS_FILE)
    return report | {"n_docs": len(docs),
                     "n_bytes": sum(len(d["text"].encode("utf-8")) for d in docs)}


def write_corpus(docs: list[dict], path: str | Path) -> None:
    """Gzip JSON lines, one kept document per line: ``{"url", "source", "kind", "text"}``."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({k: d[k] for k in ("url", "source", "kind", "text")},
                               ensure_ascii=False) + "\n")


def read_corpus(artifact_or_path) -> list[dict]:
    """The documents of a corpus artifact (``stages.get_corpus``) or a ``corpus.jsonl.gz`` path."""
    path = artifact_or_path.file(CORPUS_FILE) if hasattr(artifact_or_path, "file") \
        else Path(artifact_or_path)
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path.name}, line {n}: not a JSON document ({exc})") from exc
    return docs
