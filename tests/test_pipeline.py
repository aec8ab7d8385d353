"""The whole pipeline on the smoke world, the corpus artifact, the mix (notebook 01, sections 5-6)."""
import doctest
from collections import Counter

import pytest

from llmlab import stages, world
from llmlab.config import get_preset
from llmlab.data import crawl, dedup, extract, mix, pipeline, quality


@pytest.mark.parametrize("module", [crawl, extract, dedup, quality, mix])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        art = stages.get_crawl("smoke")
        records = world.read_truth(art.file("truth.jsonl.gz"))
        docs, report = pipeline.clean_crawl(art.file("crawl.warc.gz"), get_preset("smoke").data,
                                            records, progress=False)
        truth = {r["url"]: r for r in records}
    return docs, report, truth


def test_pipeline_keeps_good_pages_and_drops_bad_ones_and_mirrors(smoke_run):
    docs, report, truth = smoke_run
    kept = Counter(truth[d["url"]]["quality"] for d in docs)
    all_good = {r["cluster"] for r in truth.values() if r["quality"] == "good"}
    n_bad = sum(r["quality"] == "bad" for r in truth.values())
    # every good page survives (one copy per duplicate cluster) ...
    assert {truth[d["url"]]["cluster"] for d in docs if truth[d["url"]]["quality"] == "good"} == all_good
    # ... most bad pages do not ...
    assert kept["bad"] <= 0.2 * n_bad
    # ... and no duplicate cluster keeps two members (mirrors and near-duplicates are gone)
    clusters = Counter(truth[d["url"]]["cluster"] for d in docs)
    assert max(clusters.values()) == 1
    mirrors = [r for r in truth.values() if r["copy_type"] == "mirror"]
    assert mirrors and not any(
        r["url"] in {d["url"] for d in docs} and r["copy_of"] in {d["url"] for d in docs}
        for r in mirrors)


def test_report_counts_every_step(smoke_run):
    docs, report, truth = smoke_run
    steps = report["steps"]
    assert [s["step"] for s in steps] == ["crawl", "extract", "exact_dedup", "near_dedup",
                                          "quality_rules", "mix"]
    for a, b in zip(steps, steps[1:]):
        assert b["docs_in"] == a["docs_out"]
    assert steps[-1]["docs_out"] == len(docs)
    assert report["crawl"]["responses"] == len(truth)
    assert report["extraction"]["f1"] > 0.95
    assert report["dedup"]["vs_world_clusters"]["recall"] == 1.0
    assert report["quality"]["vs_labels"]["recall"] >= 0.8
    assert set(report["mix"]["before"]) >= set(report["mix"]["after"])
    assert sum(report["mix"]["after"].values()) == pytest.approx(1.0)


def test_get_corpus_artifact_and_reader(smoke_run):
    docs, report, _ = smoke_run
    art = stages.get_corpus("smoke")
    got = pipeline.read_corpus(art)
    assert got == docs
    assert set(got[0]) == {"url", "source", "kind", "text"}
    assert art.info["n_docs"] == len(docs) and art.info["steps"] == report["steps"]
    assert stages.get_corpus("smoke").path == art.path          # cached, not rebuilt


def test_read_corpus_names_a_bad_line(tmp_path):
    import gzip

    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="corpus.jsonl.gz, line 2"):
        pipeline.read_corpus(path)


def test_mix_shares_and_sampling_by_weight():
    docs = [{"source": "wiki", "text": "a" * 10}] * 10 + [{"source": "web", "text": "b" * 10}] * 90
    assert mix.source_shares(docs, by="docs") == {"wiki": 0.1, "web": 0.9}
    sample = mix.sample_by_weight(docs, {"wiki": 9.0, "web": 1.0}, 4000, seed=0)
    share = sum(d["source"] == "wiki" for d in sample) / len(sample)
    assert share == pytest.approx(0.5, abs=0.03)        # 9*10 / (9*10 + 1*90)
    up = mix.apply_mix(docs, {"wiki": 2.5, "web": 1.0})
    assert Counter(d["source"] for d in up) == {"wiki": 25, "web": 90}
    with pytest.raises(ValueError, match="positive weight"):
        mix.sample_by_weight(docs, {"code": 1.0}, 5)


def test_unknown_extractor_is_a_clear_error(tmp_path):
    from llmlab.config import DataConfig

    art = stages.get_crawl("smoke")
    with pytest.raises(ValueError, match="DataConfig.extractor='nope'"):
        pipeline.clean_crawl(art.file("crawl.warc.gz"), DataConfig(extractor="nope"), progress=False)


def test_classifier_step_when_configured():
    from llmlab.config import DataConfig

    art = stages.get_crawl("smoke")
    truth = world.read_truth(art.file("truth.jsonl.gz"))
    cfg = DataConfig(use_classifier=True, classifier_threshold=0.5)
    docs, report = pipeline.clean_crawl(art.file("crawl.warc.gz"), cfg, truth, progress=False)
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["quality_classifier"]["docs_in"] == steps["quality_rules"]["docs_out"]
    assert steps["quality_classifier"]["docs_out"] == len(docs) < steps["quality_rules"]["docs_out"]


def test_split_by_url_is_deterministic_disjoint_and_about_half():
    urls = [f"http://site{i % 7}.example/p/{i}" for i in range(4000)]
    tune, held = pipeline.split_by_url([{"url": u} for u in urls])
    t, h = {d["url"] for d in tune}, {d["url"] for d in held}
    assert not t & h and t | h == set(urls)
    assert 0.47 < len(h) / len(urls) < 0.53
    assert [d["url"] for d in pipeline.split_by_url([{"url": u} for u in urls])[1]] == \
        [d["url"] for d in held]                                        # same split every run
    assert pipeline.split_by_url([{"url": u} for u in urls], frac=0.2)[1] != held
    assert len(pipeline.split_by_url([{"url": u} for u in urls], frac=0.0)[1]) == 0


def _labelled_docs(n=400, seed=0):
    import random

    rng = random.Random(seed)
    good = "The river runs to the sea, and the people of the valley fish and farm with care."
    docs, bad = [], {}
    for i in range(n):
        url = f"http://x.example/{i}"
        b = rng.random() < 0.3
        text = " ".join(rng.choice(["Buy", "now", "free"]) for _ in range(rng.randint(1, 12))) \
            if b else good + " " * rng.randint(0, 3) + rng.choice(["", " It is so."])
        docs.append({"url": url, "text": text, "is_code": False})
        bad[url] = b
    return docs, bad


def test_heldout_rules_never_reads_heldout_labels():
    """Flipping every held-out label leaves the tuned thresholds and the tuned-on score as they
    were, and changes only the held-out score: the held-out pages were not used for tuning."""
    docs, bad = _labelled_docs()
    r = pipeline.heldout_rules(docs, bad)
    assert set(r["tune_urls"]).isdisjoint(r["heldout_urls"])
    assert len(r["tune_urls"]) + len(r["heldout_urls"]) == len(docs)
    assert r["heldout"]["docs"] == len(r["heldout_urls"])
    flipped = {u: (not b) if u in set(r["heldout_urls"]) else b for u, b in bad.items()}
    r2 = pipeline.heldout_rules(docs, flipped)
    assert r2["rules"] == r["rules"] and r2["tuned_on"] == r["tuned_on"]
    assert r2["heldout"] != r["heldout"]
    assert r["tuned_on"]["recall"] > 0.9                 # the short spam is found


def test_heldout_classifier_threshold_comes_from_the_tune_part():
    import numpy as np

    docs, bad = _labelled_docs()
    rng = np.random.default_rng(0)
    scores = np.array([rng.uniform(0, 0.5) if bad[d["url"]] else rng.uniform(0.3, 1) for d in docs])
    r = pipeline.heldout_classifier(docs, bad, scores)
    held = {d["url"] for d in docs if pipeline.is_heldout(d["url"])}
    flipped = {u: (not b) if u in held else b for u, b in bad.items()}
    r2 = pipeline.heldout_classifier(docs, flipped, scores)
    assert r2["threshold"] == r["threshold"] and r2["tuned_on"] == r["tuned_on"]
    assert r["heldout"]["docs"] == len(held) and 0.3 <= r["threshold"] <= 0.55
    assert len(r["heldout_curve"]["threshold"]) == len(r["heldout_curve"]["precision"])


def test_dedup_vs_world_by_hand():
    truth = {"a": {"quality": "good", "cluster": 1}, "b": {"quality": "good", "cluster": 1},
             "c": {"quality": "good", "cluster": 2}, "d": {"quality": "bad", "cluster": 3}}
    # a, b truly copies; the prediction also joins c to them; d (bad) is ignored
    r = pipeline.dedup_vs_world(["a", "b", "c", "d"], [0, 0, 0, 0], truth)
    assert (r["precision"], r["recall"], r["docs"]) == (1 / 3, 1.0, 3)


def test_mix_keeps_the_corpus_with_unit_weights_and_counts_epochs():
    import random

    rng = random.Random(0)
    docs = [{"source": rng.choice(["wiki", "books", "forum"]), "text": "x" * rng.randint(1, 9),
             "i": i} for i in range(300)]
    assert mix.apply_mix(docs, {}) == docs
    assert mix.apply_mix(docs, {"wiki": 1.0, "books": 1.0}) == docs        # same order too
    n = Counter(d["source"] for d in docs)
    for w in (0.0, 0.3, 1.0, 1.5, 3.0):
        out = mix.apply_mix(docs, {"wiki": w}, seed=1)
        got = Counter(d["source"] for d in out)
        assert got["wiki"] == int(w) * n["wiki"] + round((w - int(w)) * n["wiki"])
        assert got["books"] == n["books"] and got["forum"] == n["forum"]
    t = mix.mix_table(docs, {"wiki": 2.0})
    assert t["wiki"]["units_after"] == 2 * t["wiki"]["units"]
    assert sum(r["share_after"] for r in t.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 0"):
        mix.apply_mix(docs, {"wiki": -1.0})


def test_report_says_what_the_default_mix_did(smoke_run):
    docs, report, truth = smoke_run
    m = report["mix"]
    assert set(m["epochs_by_source"].values()) == {1.0}
    assert m["what_it_did"].startswith("natural mix")
    assert m["docs_by_source_after"] == m["docs_by_source_before_mix"]
