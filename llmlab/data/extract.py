"""Main-text extraction: from a page's HTML to its paragraphs (notebook 01, section 2).

A crawled page is mostly not its text: navigation menus, cookie banners, ads, related-link
lists and footers surround the few paragraphs a reader came for. Two extractors, side by side:

- :func:`extract_simple`, written here for teaching: parse the HTML into *blocks* (paragraphs,
  list items, table cells, ``<pre>``), drop the ones that are boilerplate **by structure** (inside
  ``<nav>``, ``<footer>``, ``<aside>``, or an element whose class or id says menu, cookie, ad,
  related ...) and **by link density** (a block whose text is mostly link text is navigation).
- :func:`extract_trafilatura`, the library FineWeb uses (many more heuristics, a fallback chain).

Both are scored with :func:`line_prf` against the world's ground truth, one paragraph per line.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser

# tags whose whole subtree is never main text
SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "iframe", "head", "nav",
             "footer", "aside", "header", "form", "button", "select"}
# tags that start a new block of text
BLOCK_TAGS = {"p", "div", "li", "td", "th", "pre", "blockquote", "article", "section", "main",
              "ul", "ol", "table", "tr", "dd", "dt", "figcaption", "body", "br",
              "h1", "h2", "h3", "h4", "h5", "h6"}
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
VOID_TAGS = {"br", "img", "hr", "meta", "link", "input", "wbr", "source", "area", "base", "col"}
# class or id words that mark boilerplate on real sites
BOILERPLATE_RE = re.compile(
    r"(^|[\s_-])(nav|navbar|menu|footer|header|sidebar|cookie|cookies|consent|banner|ad|ads|"
    r"advert|advertisement|sponsor|promo|related|share|social|breadcrumbs?|popup|modal|"
    r"newsletter|subscribe|widget|comments?)($|[\s_-])", re.I)


@dataclass
class Block:
    """A run of text between block-level tags, with what we know about where it sat."""

    text: str = ""
    link_chars: int = 0            # characters of the text that sit inside <a>
    tag: str = ""                  # the innermost block tag
    boilerplate: bool = False      # inside a skipped tag or a boilerplate class/id
    pre: bool = False              # inside <pre> (keep its line breaks)

    @property
    def link_density(self) -> float:
        """Share of the block's characters that are link text (0 = none, 1 = all links)."""
        n = len(self.text.strip())
        return self.link_chars / n if n else 0.0


class _BlockParser(HTMLParser):
    """Splits HTML into :class:`Block` s (html.parser: forgiving, in the standard library)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.stack: list[tuple[str, bool]] = []      # (tag, marks boilerplate)
        self.cur = Block()
        self.in_link = 0
        self.in_pre = 0
        self.title = ""
        self._in_title = False

    def _flush(self):
        if self.cur.text.strip():
            self.blocks.append(self.cur)
        tag = next((t for t, _ in reversed(self.stack) if t in BLOCK_TAGS), "")
        self.cur = Block(tag=tag, boilerplate=self._boiler(), pre=self.in_pre > 0)

    def _boiler(self) -> bool:
        return any(b for _, b in self.stack)

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        if tag in VOID_TAGS:
            if tag == "br":
                self.cur.text += "\n"
            return
        a = dict(attrs)
        marks = tag in SKIP_TAGS or bool(BOILERPLATE_RE.search(
            " ".join(filter(None, [a.get("class"), a.get("id"), a.get("role")]))))
        self.stack.append((tag, marks))
        if tag == "a":
            self.in_link += 1
        if tag == "pre":
            self.in_pre += 1
        if tag in BLOCK_TAGS or marks:   # boilerplate, even inline, gets a block of its own
            self._flush()

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag in VOID_TAGS or not any(t == tag for t, _ in self.stack):
            return   # stray end tag: ignore (real HTML is full of them)
        idx = max(i for i, (t, _) in enumerate(self.stack) if t == tag)
        popped = self.stack[idx:]          # the tag and any unclosed tags inside it
        boundary = tag in BLOCK_TAGS or any(m for _, m in popped)
        if boundary:
            self._flush()
        for t, _ in popped:
            self.in_link -= t == "a"
            self.in_pre -= t == "pre"
        del self.stack[idx:]
        if boundary:
            self._flush()

    def handle_data(self, data):
        if self._in_title:
            self.title += data
            return
        self.cur.text += data
        if self.in_link:
            self.cur.link_chars += len(data.strip())


def html_blocks(html: str) -> tuple[str, list[Block]]:
    """The page's ``<title>`` and its text blocks in document order."""
    p = _BlockParser()
    p.feed(html)
    p.close()
    p._flush()
    return p.title.strip(), p.blocks


@dataclass
class Extracted:
    """What an extractor found: the title, the main-text lines, and whether it was code."""

    title: str
    lines: list = field(default_factory=list)
    is_code: bool = False          # main text came from <pre> (quality rules for prose skip it)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def extract_simple(html: str, max_link_density: float = 0.5) -> Extracted:
    """Main text by structure and link density (the teaching extractor).

    1) split the page into blocks; 2) drop blocks inside boilerplate structure; 3) drop
    headings (the title is kept apart); 4) drop blocks whose link density exceeds
    ``max_link_density``; 5) one line per remaining paragraph (``<pre>`` keeps its lines).
    """
    title, blocks = html_blocks(html)
    lines, is_code = [], False
    for b in blocks:
        if b.boilerplate or b.tag in HEADINGS:                 # 2) and 3)
            continue
        if b.link_density > max_link_density:                  # 4)
            continue
        if b.pre:                                              # 5)
            is_code = True
            lines += [l.rstrip() for l in b.text.strip("\n").split("\n")]
        else:
            text = " ".join(b.text.split())
            if text:
                lines.append(text)
    title = title.rsplit(" | ", 1)[0] if " | " in title else title
    return Extracted(title=title, lines=lines, is_code=is_code)


def extract_trafilatura(html: str) -> Extracted:
    """Main text with trafilatura (FineWeb's extractor), as one line per paragraph."""
    import trafilatura

    text = trafilatura.extract(html, include_comments=False, include_tables=True,
                               include_formatting=False, deduplicate=False, with_metadata=False,
                               favor_precision=False) or ""
    is_code = "<pre" in html and "<code" in html
    return Extracted(title="", lines=[l for l in text.split("\n")], is_code=is_code)


EXTRACTORS = {"simple": extract_simple, "trafilatura": extract_trafilatura}


# --------------------------------------------------------------------------------------------
# Scoring against the ground truth
# --------------------------------------------------------------------------------------------


def _norm_line(line: str) -> str:
    return " ".join(line.split())


def line_prf(predicted: list[str], truth: list[str]) -> tuple[float, float, float]:
    """Line-level precision, recall and F1 of extracted lines against the true lines.

    Lines are compared after collapsing whitespace; empty lines are ignored; repeated lines
    count as often as they appear (a multiset). An empty prediction of an empty truth is perfect.

    >>> line_prf(["a b", "menu"], ["a  b", "c"])
    (0.5, 0.5, 0.5)
    """
    p = Counter(_norm_line(l) for l in predicted if l.strip())
    t = Counter(_norm_line(l) for l in truth if l.strip())
    hit = sum((p & t).values())
    n_p, n_t = sum(p.values()), sum(t.values())
    if n_p == 0 and n_t == 0:
        return 1.0, 1.0, 1.0
    prec = hit / n_p if n_p else 0.0
    rec = hit / n_t if n_t else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1


def score_extractor(pages: list[dict], truth_by_url: dict, extractor=extract_simple) -> dict:
    """Mean line precision, recall and F1 of ``extractor`` over ``pages`` (micro and macro).

    Micro sums matched lines over all pages; macro averages the per-page scores.
    """
    hit = n_p = n_t = 0
    per_page = []
    for page in pages:
        truth = truth_by_url[page["url"]]["lines"]
        pred = extractor(page["html"]).lines
        p = Counter(_norm_line(l) for l in pred if l.strip())
        t = Counter(_norm_line(l) for l in truth if l.strip())
        hit += sum((p & t).values())
        n_p += sum(p.values())
        n_t += sum(t.values())
        per_page.append(line_prf(pred, truth))
    prec, rec = hit / max(n_p, 1), hit / max(n_t, 1)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    macro = [sum(x[i] for x in per_page) / max(len(per_page), 1) for i in range(3)]
    return {"precision": prec, "recall": rec, "f1": f1, "macro_f1": macro[2], "pages": len(pages)}
