"""The whole data pipeline on a preset's crawl: wall time, documents per step, scores.

    python benchmarks/pipeline.py [--preset cpu] [--repeats 3]

Times :func:`llmlab.data.pipeline.clean_crawl` from the gzip WARC to the cleaned documents
(median of ``--repeats`` runs; the crawl itself is built once beforehand and its build time
reported apart). Reports documents in and out of every step, line-level extraction F1 of the
package's extractor next to trafilatura's on every page, and the quality filter's precision
and recall against the world's labels: the tuned rules the pipeline uses, Gopher's original
thresholds, and the fastText-style classifier; then the same thresholds tuned on one half of
the documents (split by URL hash) and scored on the other, with Wilson 95% intervals and n, and
what the data-mix step did. The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from llmlab import stages, world  # noqa: E402
from llmlab.config import get_preset  # noqa: E402
from llmlab.data import crawl, dedup, extract, pipeline, quality  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    p = get_preset(args.preset)
    cfg = p.data
    t0 = time.perf_counter()
    art = stages.get_crawl(p)
    crawl_seconds = time.perf_counter() - t0
    warc = art.file("crawl.warc.gz")
    truth = world.read_truth(art.file("truth.jsonl.gz"))
    truth_by_url = {t["url"]: t for t in truth}

    # 1) the whole pipeline, timed
    times = []
    for k in range(args.repeats):
        t0 = time.perf_counter()
        docs, report = pipeline.clean_crawl(warc, cfg, truth, progress=False)
        times.append(time.perf_counter() - t0)
        print(f"run {k + 1}/{args.repeats}: {times[-1]:.2f} s", file=sys.stderr)

    # 2) both extractors on every page
    pages = crawl.read_pages(warc)
    t0 = time.perf_counter()
    simple = extract.score_extractor(pages, truth_by_url, extract.extract_simple)
    t_simple = time.perf_counter() - t0
    t0 = time.perf_counter()
    traf = extract.score_extractor(pages, truth_by_url, extract.extract_trafilatura)
    t_traf = time.perf_counter() - t0

    # 3) quality filters on the deduplicated documents (what the quality step sees)
    texts = [extract.extract_simple(pg["html"]) for pg in pages]
    keep, _ = dedup.exact_dedup([e.text for e in texts])
    nd = dedup.near_dedup([texts[i].text for i in keep], cfg.shingle_n, cfg.num_perm,
                          cfg.lsh_bands, cfg.jaccard_threshold, cfg.dedup_confirm)
    idx = [keep[i] for i in nd.keep]
    docs_q = [{"url": pages[i]["url"], "text": texts[i].text, "is_code": texts[i].is_code,
               "source": truth_by_url[pages[i]["url"]]["source"]} for i in idx]
    is_bad = [truth_by_url[d["url"]]["quality"] == "bad" for d in docs_q]
    tuned = pipeline.rules_from_config(cfg)
    gopher = quality.QualityRules()
    rules_tuned = quality.removal_prf(
        [bool(quality.rule_failures(d["text"], tuned, d["is_code"])) for d in docs_q], is_bad)
    rules_gopher = quality.removal_prf(
        [bool(quality.rule_failures(d["text"], gopher, d["is_code"])) for d in docs_q], is_bad)
    t0 = time.perf_counter()
    clf = pipeline.train_reference_classifier(docs_q, cfg)
    clf_seconds = time.perf_counter() - t0
    scores = clf.score([d["text"] for d in docs_q])
    clf_prf = quality.removal_prf([s < cfg.classifier_threshold for s in scores], is_bad)

    r4 = lambda x: round(x, 4)  # noqa: E731

    # 4) held out: thresholds tuned on one half of the documents (a hash of the URL), scored on
    #    the other half; the classifier's threshold likewise (it is trained on sources, not labels)
    bad_by_url = {d["url"]: b for d, b in zip(docs_q, is_bad)}
    held_rules = pipeline.heldout_rules(docs_q, bad_by_url)
    held_clf = pipeline.heldout_classifier(docs_q, bad_by_url, scores)
    held_pages = pipeline.split_by_url(pages)[1]
    held_simple = extract.score_extractor(held_pages, truth_by_url, extract.extract_simple)

    def rate(r):
        lo_p, hi_p = quality.wilson_interval(r["tp"], r["removed"])
        lo_r, hi_r = quality.wilson_interval(r["tp"], r["bad"])
        return {"docs": r["docs"], "bad": r["bad"], "removed": r["removed"],
                "precision": r4(r["precision"]), "precision_ci95": [r4(lo_p), r4(hi_p)],
                "recall": r4(r["recall"]), "recall_ci95": [r4(lo_r), r4(hi_r)]}

    out = {
        "benchmark": "pipeline", "preset": p.name, "torch_threads": torch.get_num_threads(),
        "pipeline_seconds_median": round(statistics.median(times), 3),
        "pipeline_seconds_runs": [round(t, 3) for t in times], "goal_pipeline_seconds": 120,
        "crawl_build_or_load_seconds": round(crawl_seconds, 3),
        "step_seconds": report["seconds"],
        "steps": report["steps"], "retained_frac": report["retained_frac"],
        "extraction_f1_simple": r4(simple["f1"]), "extraction_precision_simple": r4(simple["precision"]),
        "extraction_recall_simple": r4(simple["recall"]), "extraction_seconds_simple": round(t_simple, 3),
        "extraction_f1_trafilatura": r4(traf["f1"]),
        "extraction_precision_trafilatura": r4(traf["precision"]),
        "extraction_recall_trafilatura": r4(traf["recall"]),
        "extraction_seconds_trafilatura": round(t_traf, 3),
        "quality_rules_precision": r4(rules_tuned["precision"]),
        "quality_rules_recall": r4(rules_tuned["recall"]),
        "quality_gopher_defaults_precision": r4(rules_gopher["precision"]),
        "quality_gopher_defaults_recall": r4(rules_gopher["recall"]),
        "quality_classifier_precision": r4(clf_prf["precision"]),
        "quality_classifier_recall": r4(clf_prf["recall"]),
        "classifier_threshold": cfg.classifier_threshold, "classifier_train_seconds": round(clf_seconds, 3),
        "classifier_reference_sources": list(cfg.reference_sources),
        "quality_rules_heldout": {
            "tuned_thresholds": {k: getattr(held_rules["rules"], k) for k in quality.TUNE_GRID},
            "same_as_config": all(getattr(held_rules["rules"], k) == getattr(tuned, k)
                                  for k in quality.TUNE_GRID),
            "tuned_on": rate(held_rules["tuned_on"]), "heldout": rate(held_rules["heldout"])},
        "quality_classifier_heldout": {
            "threshold_chosen_on_tune_half": r4(held_clf["threshold"]),
            "tuned_on": rate(held_clf["tuned_on"]), "heldout": rate(held_clf["heldout"])},
        "extraction_heldout_simple": {"pages": held_simple["pages"], "f1": r4(held_simple["f1"]),
                                      "note": "the extractor was written for these page templates"},
        "dedup_vs_world_clusters": {k: r4(v) if isinstance(v, float) else v
                                    for k, v in report["dedup"]["vs_world_clusters"].items()},
        "dedup_measure": "exact + near dedup, pairs among all extracted good pages",
        "mix": {"what_it_did": report["mix"]["what_it_did"],
                "epochs_by_source": report["mix"]["epochs_by_source"],
                "docs_by_source_before_mix": report["mix"]["docs_by_source_before_mix"],
                "docs_by_source_after": report["mix"]["docs_by_source_after"]},
        "malformed_records": report["crawl"]["malformed"],
    }
    out["goals_met"] = out["pipeline_seconds_median"] < 120
    print(json.dumps(out))


if __name__ == "__main__":
    main()
