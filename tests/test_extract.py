"""Main-text extraction and its line-level score (notebook 01, section 2)."""
import pytest

from llmlab import stages, world
from llmlab.data import crawl, extract

PAGE = """<!DOCTYPE html><html><head><title>Otters | rivers.example</title>
<script>var x = "<p>not text</p>";</script><style>p {color: red}</style></head><body>
<header><div>Rivers Magazine</div></header>
<div class="cookie-consent">We use cookies. <a href="/ok">OK</a></div>
<nav><a href="/">Home</a> <a href="/news">News</a></nav>
<div id="main-content">
  <h1>Otters</h1>
  <p>Otters live in rivers and eat <a href="/fish">fish</a> every day.</p>
  <p>They sleep in dens   on the bank.<br></p>
  <div><a href="/a">Read more</a> | <a href="/b">Share</a></div>
  <pre><code>def otter():
    return "swim"</code></pre>
</div>
<div class="sidebar-ad">Buy a boat today!</div>
<ul class="links"><li><a href="/1">Beavers</a></li><li><a href="/2">Ducks</a></li></ul>
<footer><p>(c) 2024 Rivers Magazine</p></footer>
</body></html>"""
TRUTH = ["Otters live in rivers and eat fish every day.", "They sleep in dens on the bank.",
         "def otter():", '    return "swim"']


def test_simple_extractor_on_a_hand_made_page():
    ex = extract.extract_simple(PAGE)
    assert ex.title == "Otters"
    assert ex.lines == TRUTH
    assert ex.is_code
    assert extract.line_prf(ex.lines, TRUTH) == (1.0, 1.0, 1.0)


def test_link_density_is_what_drops_the_link_lists():
    _, blocks = extract.html_blocks(PAGE)
    links = [b for b in blocks if b.text.strip().startswith("Beavers")]
    assert links and links[0].link_density == 1.0
    # with the threshold at 1.0 the link-only blocks come back: precision falls, recall stays
    loose = extract.extract_simple(PAGE, max_link_density=1.01)
    p, r, _ = extract.line_prf(loose.lines, TRUTH)
    assert r == 1.0 and p < 1.0


def test_line_prf_by_hand():
    assert extract.line_prf(["a", "b", "x"], ["a", "b", "c", "d"]) == pytest.approx(
        (2 / 3, 2 / 4, 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5)))
    assert extract.line_prf([], ["a"]) == (0.0, 0.0, 0.0)
    assert extract.line_prf([" a  b "], ["a b", ""]) == (1.0, 1.0, 1.0)
    # repeated lines count as often as they occur
    assert extract.line_prf(["a", "a"], ["a"]) == (0.5, 1.0, pytest.approx(2 / 3))


def test_both_extractors_on_the_world():
    art = stages.get_crawl("smoke")
    pages = crawl.read_pages(art.file("crawl.warc.gz"))
    truth = {r["url"]: r for r in world.read_truth(art.file("truth.jsonl.gz"))}
    simple = extract.score_extractor(pages, truth, extract.extract_simple)
    traf = extract.score_extractor(pages[:30], truth, extract.extract_trafilatura)
    assert simple["f1"] > 0.95
    # trafilatura finds most of the main text but keeps headings and some boilerplate
    assert traf["recall"] > 0.5 and 0 < traf["precision"] <= 1


def test_broken_html_does_not_crash():
    ex = extract.extract_simple("<div><p>Unclosed <b>bold</div></p></span><p>Second para.")
    assert ex.lines == ["Unclosed bold", "Second para."]
