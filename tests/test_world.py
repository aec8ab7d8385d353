import html
import math
import re

import pytest
from warcio.archiveiterator import ArchiveIterator

from llmlab import stages
from llmlab.config import PRESETS, WorldConfig
from llmlab.world import (BAD_KINDS, GOOD_KINDS, KINDS, RELATIONS, ChoiceRng, a_an, build_knowledge,
                          build_world, plural, read_truth, summary, write_warc)

SMOKE = PRESETS["smoke"].world


@pytest.fixture(scope="module")
def world():
    return build_world(SMOKE)


def shingles(text, n=5):
    w = text.split()
    return {tuple(w[i:i + n]) for i in range(max(len(w) - n + 1, 1))}


def test_hand_worked_helpers():
    assert plural("frostfox") == "frostfoxes" and plural("ashowl") == "ashowls"
    assert a_an("emberfox") == "an emberfox" and a_an("reedswan") == "a reedswan"
    r = ChoiceRng(0)
    r.choice("abcd")            # 2 bits
    r.choice(range(8))          # 3 bits
    r.weighted("ab", [1, 3])    # 2 bits or log2(4/3)
    assert r.bits in (pytest.approx(7.0), pytest.approx(5 + math.log2(4 / 3)))


def test_deterministic_bytes(tmp_path):
    a, b = build_world(SMOKE), build_world(SMOKE)
    assert [p.html for p in a.pages] == [p.html for p in b.pages]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_warc(a, tmp_path / "a" / "c.warc.gz")
    write_warc(b, tmp_path / "b" / "c.warc.gz")
    assert (tmp_path / "a" / "c.warc.gz").read_bytes() == (tmp_path / "b" / "c.warc.gz").read_bytes()
    c = build_world(WorldConfig(**{**SMOKE.__dict__, "seed": SMOKE.seed + 1}))
    assert [p.html for p in c.pages] != [p.html for p in a.pages]


def test_every_kind_present_with_labels(world):
    kinds = {p.kind for p in world.pages}
    assert kinds == set(KINDS)
    for p in world.pages:
        assert p.quality == ("good" if p.kind in GOOD_KINDS else "bad")


def test_main_text_is_in_the_html(world):
    for p in world.pages:
        body = html.unescape(p.html)
        for line in p.lines:
            assert line in body, (p.url, line)
        assert "<nav" in p.html and "<footer>" in p.html   # boilerplate around it


def test_stated_facts_match_the_knowledge_base(world):
    facts = {f.id: f for f in world.facts}
    for p in world.pages:
        for fid in p.fact_ids:
            f = facts[fid]
            assert not f.heldout
            assert f.subject in p.text and f.object in p.text, (p.url, f)


def test_heldout_facts_and_unknown_entities_never_appear(world):
    everything = "\n".join(p.html for p in world.pages)
    for f in world.facts:
        if f.heldout:
            assert f.statement not in everything
    for e in world.unknown:
        assert e.name not in everything, e.name
    counts = world.fact_counts()          # every statement a page records, paraphrases included
    assert all(counts[f.id] == 0 for f in world.facts if f.heldout) and max(counts.values()) > 0
    assert sum(f.heldout for f in world.facts) > 0


def test_knowledge_is_consistent():
    kb = build_knowledge(PRESETS["cpu"].world)
    names = [e.name for e in kb.entities + kb.unknown]
    assert len(names) == len(set(names))
    people = {e.name for e in kb.entities if e.kind == "person"}
    countries = {e.name for e in kb.entities if e.kind == "country"}
    for f in kb.facts:
        kind = RELATIONS[f.relation][0]
        assert kb.entity(f.subject).kind == kind
        if f.relation == "born_in":
            assert f.object in countries
        if f.relation == "inventor":
            assert f.object in people
    assert len(kb.decline_requests) >= 16
    q, a, fact = kb.questions()[0]
    assert q.endswith("?") and a == fact.object


def test_duplicates(world):
    by_url = {p.url: p for p in world.pages}
    mirrors = [p for p in world.pages if p.copy_type == "mirror"]
    near = [p for p in world.pages if p.copy_type == "near_dup"]
    assert mirrors and near
    for p in mirrors:
        o = by_url[p.copy_of]
        assert p.lines == o.lines and p.cluster == o.cluster and p.html != o.html
    for p in near:
        o = by_url[p.copy_of]
        a, b = shingles(p.text), shingles(o.text)
        assert p.lines != o.lines
        assert len(a & b) / len(a | b) >= 0.8
    clusters = {p.cluster for p in world.pages if not p.copy_type}
    assert len(clusters) == sum(1 for p in world.pages if not p.copy_type)


def test_warc_reads_back_with_charsets(tmp_path, world):
    path = tmp_path / "c.warc.gz"
    stats = write_warc(world, path)
    assert stats["pages"] == len(world.pages)
    by_url = {p.url: p for p in world.pages}
    n, non_utf8 = 0, 0
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh):
            if rec.rec_type != "response":
                continue
            url = rec.rec_headers.get_header("WARC-Target-URI")
            ctype = rec.http_headers.get_header("Content-Type")
            charset = re.search(r"charset=([\w-]+)", ctype).group(1)
            body = rec.content_stream().read().decode(charset)
            assert body == by_url[url].html
            non_utf8 += charset != "utf-8"
            n += 1
    assert n == len(world.pages) and non_utf8 >= 1


def test_some_windows_1252_pages_carry_non_ascii():
    w = build_world(PRESETS["cpu"].world)
    latin = [p for p in w.pages if p.charset == "windows-1252"]
    assert latin and any(any(ord(c) > 127 for c in p.text) for p in latin)
    # such a page is not valid UTF-8 once encoded: a reader must honour the charset
    p = next(p for p in latin if any(ord(c) > 127 for c in p.text))
    with pytest.raises(UnicodeDecodeError):
        p.html.encode("cp1252").decode("utf-8")


def test_summary_and_entropy(world):
    s = summary(world)
    assert s["pages"] == len(world.pages)
    assert abs(sum(s["kind_shares"].values()) - 1) < 1e-3      # shares are rounded to 4 places
    assert 0.02 < s["entropy_bits_per_byte"] < 0.5     # the renderer's choices: a small part of each byte
    assert set(s["kind_counts"]) == set(KINDS) and all(s["kind_counts"][k] for k in BAD_KINDS)


def test_crawl_artifact_roundtrip():
    art = stages.get_crawl("smoke")
    truth = read_truth(art.file("truth.jsonl.gz"))
    w = stages.get_world("smoke")
    assert [t["url"] for t in truth] == [p.url for p in w.pages]
    assert art.info["pages"] == len(w.pages)
    again = stages.get_crawl("smoke")
    assert again.meta["built_at"] == art.meta["built_at"]       # reused, not rebuilt
    art.file("crawl.warc.gz").write_bytes(art.file("crawl.warc.gz").read_bytes()[:-100])
    rebuilt = stages.get_crawl("smoke")                          # truncated -> rebuilt
    assert rebuilt.file("crawl.warc.gz").stat().st_size == art.meta["files"]["crawl.warc.gz"]["size"]


def test_unshown_choice_keeps_the_stream_and_counts_no_bits():
    """A template field the sentence does not show is still drawn (every later choice, so every
    page, stays the same) but adds no bits: counting it made the renderer's entropy an
    over-estimate that the base model beat on stories."""
    from llmlab.world import ChoiceRng

    a, b = ChoiceRng(3), ChoiceRng(3)
    assert a.choice("abcdefg") == b.unshown_choice("abcdefg")
    assert a.bits == pytest.approx(math.log2(7)) and b.bits == 0.0
    assert [a.choice(range(100)) for _ in range(5)] == [b.choice(range(100)) for _ in range(5)]


def test_fresh_pages_share_the_knowledge_not_the_text(world):
    """iter_pages writes new pages from the same knowledge base: the good kinds in the crawl's
    shares, every stated fact true and not held out, no unknown entity, entropy counted as the
    crawl counts it, the same pages for the same seed and different pages for another."""
    from collections import Counter

    from llmlab.world import iter_pages, write_pages

    n = 400
    pages = write_pages(world, n, seed=5)
    originals = [p for p in world.pages if p.quality == "good" and not p.copy_type]
    want = Counter(p.kind for p in originals)
    got = Counter(p.kind for p in pages)
    for kind, k in want.items():          # a fixed interleaving: within one page of its quota
        assert abs(got[kind] - n * k / len(originals)) <= 1, (kind, got, want)
    assert set(got) == set(want)
    facts = {f.id: f for f in world.facts}
    text = "\n".join(p.text for p in pages)
    for p in pages:
        for fid in p.fact_ids:
            assert not facts[fid].heldout and facts[fid].object in p.text
    assert not any(e.name in text for e in world.unknown)
    bits = sum(p.bits for p in pages) / sum(len(p.text.encode()) + 1 for p in pages)
    assert bits == pytest.approx(world.entropy_bits_per_byte(), rel=0.05)     # counted as the crawl counts it
    assert [p.text for p in write_pages(world, 50, seed=5)] == [p.text for p in pages[:50]]
    other = {p.text for p in write_pages(world, n, seed=6)}
    assert len(other & {p.text for p in pages}) < n // 4
    assert [p.text for p in write_pages(world, 3, seed=5)] == [p.text for p, _ in zip(iter_pages(world, 5), range(3))]
    with pytest.raises(ValueError, match="n_pages"):
        write_pages(world, -1, seed=5)
