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
