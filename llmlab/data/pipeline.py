"""The whole data pipeline, WARC to cleaned corpus (notebook 01, section 6).

:func:`clean_crawl` runs every step of the notebook on a WARC file, in order, and counts what
each step keeps:

1. **crawl**: stream the HTML responses (:mod:`llmlab.data.crawl`);
2. **extract**: main text (:mod:`llmlab.data.extract`); empty pages are dropped;
3. **exact dedup**: a hash of the normalised text (:func:`llmlab.data.dedup.exact_dedup`);
4. **near dedup**: MinHash + LSH + confirmation + clusters (:func:`llmlab.data.dedup.near_dedup`);
5. **quality**: the rules (:mod:`llmlab.data.quality`), and the classifier if configured;
6. **mix**: epochs per source (:mod:`llmlab.data.mix`); the default, no weights, is the
   natural mix (every document once), and the report says so.

With the world's ground truth it also measures itself: extraction F1, duplicate-pair precision
and recall against the world's duplicate clusters, and the quality filter's precision and recall
against the world's labels. :func:`build_corpus` is the recipe ``llmlab.stages.get_corpus``
runs on a preset's crawl; it stores the result as ``corpus.jsonl.gz`` (read it with
:func:`read_corpus`).
"""
from __future__ import annotations

import gzip
import io
import json
import random
import time
import zlib
from pathlib import Path

import numpy as np

from ..config import DataConfig
from . import crawl, dedup, extract, mix, quality

CORPUS_FILE = "corpus.jsonl.gz"


def rules_from_config(cfg: DataConfig) -> quality.QualityRules:
    """The quality thresholds the pipeline uses: Gopher's, with ``cfg``'s tuned values."""
    return quality.QualityRules(min_words=cfg.min_words, min_stop_words=cfg.min_stop_words,
                                max_top_2gram=cfg.max_top_2gram, max_dup_5gram=cfg.max_dup_5gram)


HELDOUT_FRAC = 0.5   # share of the crawl's pages held out from every threshold tuned on labels


def is_heldout(url: str, frac: float = HELDOUT_FRAC) -> bool:
    """Whether a page is in the held-out part of the crawl: a hash of its URL, not its content.

    Deterministic (the same URL is always on the same side, in every preset and run) and
    independent of the page's kind or quality, so each part is a random-like sample.

    >>> is_heldout("http://wiki.example/wiki/Falk_Vorka"), is_heldout("x", 0.0), is_heldout("x", 1.0)
    (False, False, True)
    """
    return zlib.crc32(f"heldout:{url}".encode("utf-8")) / 2 ** 32 < frac


def split_by_url(items: list, frac: float = HELDOUT_FRAC, key=lambda d: d["url"]) -> tuple[list, list]:
    """``(tune, heldout)``: the items whose URL is not held out, and those that are (order kept).

    Thresholds are tuned on ``tune`` and reported on ``heldout`` (notebook 01, sections 2 and 4).
    """
    tune, held = [], []
    for x in items:
        (held if is_heldout(key(x), frac) else tune).append(x)
    return tune, held


def heldout_rules(docs: list[dict], is_bad: dict, frac: float = HELDOUT_FRAC,
                  grid: dict = quality.TUNE_GRID) -> dict:
    """Quality thresholds tuned on one part of ``docs`` and scored on the other.

    1) split by URL (:func:`split_by_url`); 2) :func:`quality.tune_rules` on the tune part only
    (``is_bad`` maps a URL to its label; held-out labels are never read before step 3);
    3) the tuned rules' removal precision and recall on each part. Docs need ``url``, ``text``
    and ``is_code``. Returns ``{"rules", "tuned_on", "heldout", "tune_urls", "heldout_urls"}``,
    each score a :func:`quality.removal_prf` dict with its number of documents.
    """
    tune, held = split_by_url(docs, frac)
    tables = {k: quality.value_table([quality.rule_values(d["text"]) for d in part])
              for k, part in (("tune", tune), ("held", held))}
    rules, _ = quality.tune_rules(tables["tune"], [d["is_code"] for d in tune],
                                  [is_bad[d["url"]] for d in tune], grid=grid)
    out = {"rules": rules, "tune_urls": [d["url"] for d in tune],
           "heldout_urls": [d["url"] for d in held]}
    for key, part, table in (("tuned_on", tune, tables["tune"]), ("heldout", held, tables["held"])):
        removed = quality.failure_matrix(table, [d["is_code"] for d in part], rules).any(axis=1)
        out[key] = quality.removal_prf(removed, [is_bad[d["url"]] for d in part]) | {"docs": len(part)}
    return out


def heldout_classifier(docs: list[dict], is_bad: dict, scores, frac: float = HELDOUT_FRAC) -> dict:
    """A classifier's removal threshold chosen on one part of ``docs``, scored on the other.

    ``scores`` (N,) are P(reference-like) for ``docs`` (the classifier is trained on sources,
    not on quality labels, so it may see every document). 1) split by URL; 2)
    :func:`quality.best_threshold` on the tune part; 3) precision and recall of "remove below
    it" on each part, and the held-out part's precision-recall curve.
    """
    scores = np.asarray(scores, dtype=float)
    held_mask = np.array([is_heldout(d["url"], frac) for d in docs], dtype=bool)
    bad = np.array([is_bad[d["url"]] for d in docs], dtype=bool)
    th = quality.best_threshold(scores[~held_mask], bad[~held_mask])
    out = {"threshold": th}
    for key, m in (("tuned_on", ~held_mask), ("heldout", held_mask)):
        out[key] = quality.removal_prf(scores[m] < th, bad[m]) | {"docs": int(m.sum())}
    out["heldout_curve"] = quality.pr_curve(scores[held_mask], bad[held_mask])
    return out


def dedup_vs_world(urls: list[str], labels, truth_by_url: dict) -> dict:
    """Duplicate-pair precision and recall of predicted cluster ``labels`` against the world's
    duplicate clusters, over the good pages among ``urls`` (bad pages have no true copies).

    Which documents are passed decides what is measured: all extracted documents with the
    exact and near-dup clusters together is the whole dedup (what :func:`clean_crawl`
    reports); the documents left after exact dedup with the near-dup labels is the near-dup
    step alone, which has no exact mirrors left to find.
    """
    good = [i for i, u in enumerate(urls) if truth_by_url[u]["quality"] == "good"]
    pred = dedup.cluster_pairs([labels[i] for i in good])
    true = dedup.cluster_pairs([truth_by_url[urls[i]]["cluster"] for i in good])
    return dedup.pair_prf(pred, true) | {"docs": len(good)}


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
        # exact + near dedup together, on every extracted document (mirrors included)
        report["dedup"]["vs_world_clusters"] = dedup_vs_world(
            [d["url"] for d in docs], labels, truth_by_url)
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
    weights = dict(cfg.mix_weights)
    out = mix.apply_mix(after_quality, weights)
    step("mix", len(after_quality), len(out), t0)
    epochs = {s: float(weights.get(s, 1.0)) for s in _count(d["source"] for d in after_quality)}
    natural = all(w == 1.0 for w in epochs.values())
    report["mix"] = {"before": mix.source_shares(docs), "before_mix": mix.source_shares(after_quality),
                     "after": mix.source_shares(out), "epochs_by_source": epochs,
                     "docs_by_source_before_mix": _count(d["source"] for d in after_quality),
                     "docs_by_source_after": _count(d["source"] for d in out),
                     "what_it_did": "natural mix: every source weight 1.0, each document kept once, "
                                    "order unchanged" if natural else
                                    "weighted: each source repeated or subsampled to its epochs"}
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
    """Gzip JSON lines, one kept document per line: ``{"url", "source", "kind", "text"}``.

    Reproducible: the gzip header stores no time and no file name (``mtime=0``,
    ``filename=""``), so a rebuilt corpus is byte-identical to the last one.
    """
    with open(path, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as f:
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
