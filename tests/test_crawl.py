"""Reading the crawl: streaming, bad records skipped and counted, charsets (notebook 01, section 1)."""
import gzip
import importlib.util
import io
from pathlib import Path

import pytest

from llmlab import stages
from llmlab.data import crawl


def _members(data: bytes) -> list[int]:
    """Offsets of the gzip members (one WARC record each) of a WARC file."""
    out, i = [], data.find(crawl.GZIP_MAGIC)
    while i != -1:
        try:
            import zlib
            if zlib.decompressobj(31).decompress(data[i:i + 4096], 16).startswith(b"WARC/"):
                out.append(i)
        except Exception:
            pass
        i = data.find(crawl.GZIP_MAGIC, i + 1)
    return out


@pytest.fixture
def smoke_warc():
    art = stages.get_crawl("smoke")
    return art.file("crawl.warc.gz"), stages.get_world("smoke")


def test_reads_every_page_of_the_world(smoke_warc):
    path, world = smoke_warc
    stats = crawl.CrawlStats()
    pages = crawl.read_pages(path, stats)
    assert [p["url"] for p in pages] == [p.url for p in world.pages]
    assert stats.malformed == 0 and stats.skipped_types == {"warcinfo": 1}
    # the decoded HTML is exactly what the world rendered, whatever the charset
    assert all(p["html"] == w.html for p, w in zip(pages, world.pages))


def test_record_headers(smoke_warc):
    path, world = smoke_warc
    rec = next(iter(crawl.iter_records(path)))
    warc = dict(rec.warc_headers)
    assert warc["WARC-Type"] == "response" and warc["WARC-Target-URI"] == world.pages[0].url
    assert rec.status.startswith("200") and rec.content_type == "text/html"
    assert rec.offset > 0   # after the warcinfo record


def test_corrupted_records_are_skipped_counted_and_located(smoke_warc, tmp_path):
    path, world = smoke_warc
    data = path.read_bytes()
    starts = _members(data)
    assert len(starts) == len(world.pages) + 1
    bad = bytearray(data)
    # 1) garbage inside the compressed bytes of record 10 (a corrupt gzip member)
    bad[starts[10] + 30:starts[10] + 60] = b"x" * 30
    # 2) a valid gzip member whose WARC header is malformed (record 20)
    member = gzip.decompress(data[starts[20]:starts[21]]).replace(b"WARC/1.0", b"WARQ/9.9", 1)
    bad = bytes(bad[:starts[20]]) + gzip.compress(member) + bytes(bad[starts[21]:])
    shift = len(gzip.compress(member)) - (starts[21] - starts[20])
    # 3) the file cut off in the middle of its last record
    last = starts[-1] + shift
    bad = bad[:last + (len(bad) - last) // 2]
    out = tmp_path / "bad.warc.gz"
    out.write_bytes(bad)
    stats = crawl.CrawlStats()
    pages = crawl.read_pages(out, stats)
    assert stats.malformed == 3
    offsets = [o for o, _ in stats.errors]
    assert offsets[:2] == [starts[10], starts[20]]
    assert abs(offsets[2] - last) <= 1
    # every other page was read: the run went on after each bad record
    lost = {world.pages[i - 1].url for i in (10, 20, len(starts) - 1)}
    assert [p["url"] for p in pages] == [p.url for p in world.pages if p.url not in lost]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.warc.gz"):
        list(crawl.iter_records(tmp_path / "nope.warc.gz"))


@pytest.mark.parametrize("content_type, html, codec, where", [
    ("text/html; charset=windows-1252", b"<p>Hes\xf6ra</p>", "cp1252", "header"),
    ("text/html", b'<html><head><meta charset="windows-1252"></head><p>Hes\xf6ra</p>', "cp1252", "meta"),
    ("text/html", b'<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1">\xf6',
     "cp1252", "meta"),
    (None, "<p>Hesöra</p>".encode("utf-8"), "utf-8", "fallback"),
    (None, b"<p>Hes\xf6ra \x93quoted\x94</p>", "cp1252", "fallback"),
    ("text/html; charset=utf-8", "<p>Hesöra</p>".encode("utf-8"), "utf-8", "header"),
])
def test_detect_charset(content_type, html, codec, where):
    assert crawl.detect_charset(html, content_type) == (codec, where)


def test_windows_1252_pages_decode_to_the_right_names(smoke_warc, tmp_path):
    """A non-ASCII name served as windows-1252 (with and without a header) decodes exactly."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    text = "Zoë Hesöra, “Café” – naïve"
    path = tmp_path / "cp1252.warc.gz"
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        for i, ctype in enumerate(["text/html; charset=windows-1252", "text/html"]):
            body = f"<html><body><p>{text}</p></body></html>".encode("cp1252")
            h = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(f"http://x.example/{i}", "response",
                                                payload=io.BytesIO(body), http_headers=h))
    pages = crawl.read_pages(path)
    assert [text in p["html"] for p in pages] == [True, True]
    assert [p["charset_from"] for p in pages] == ["header", "fallback"]
    # and the world's own windows-1252 pages come out with their accents
    _, world = smoke_warc
    latin = [p for p in world.pages if p.charset == "windows-1252"]
    assert latin, "the smoke world has windows-1252 pages"
    got = {p["url"]: p["html"] for p in crawl.read_pages(smoke_warc[0])}
    assert all(got[p.url] == p.html for p in latin)


# --------------------------------------------------------------------------------------------
# Robustness: charset labels that are no text encoding, revisits, plain WARC, resync (issue 17)
# --------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
NOT_TEXT = ["quoted-printable", "base64", "rot13", "hex", "zip", "bz2", "uu", "idna",
            "undefined", "punycode"]
TEXT = "Zoë Hesöra, “Café” – naïve"


def _fixtures_script():
    """``scripts/make_fixtures.py`` as a module (it writes the WARC files used below)."""
    spec = importlib.util.spec_from_file_location("make_fixtures", ROOT / "scripts" / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _html(i: int, meta: str = "") -> str:
    return f"<html><head>{meta}<title>page {i}</title></head><body><p>{TEXT} {i}</p></body></html>"


@pytest.mark.parametrize("label", NOT_TEXT)
def test_codec_rejects_codecs_that_are_no_text_encoding(label):
    assert crawl._codec(label) is None
    assert crawl._codec(label.upper()) is None


def test_charset_labels_that_are_no_text_encoding_fall_back_and_are_counted(tmp_path):
    """Every label of NOT_TEXT, in the HTTP header and in <meta>: the read goes on, each page
    decodes to its real text (UTF-8 or windows-1252 detected), each label is counted."""
    mf = _fixtures_script()
    records, want = [], []
    for i, label in enumerate(NOT_TEXT):
        body = _html(i).encode("utf-8")
        records.append({"url": f"http://h.example/{i}", "body": body,
                        "content_type": f"text/html; charset={label}"})
        want.append((f"{TEXT} {i}", "utf-8"))
        body = _html(i, f'<meta charset="{label}">').encode("cp1252")
        records.append({"url": f"http://m.example/{i}", "body": body, "content_type": "text/html"})
        want.append((f"{TEXT} {i}", "cp1252"))
    path = tmp_path / "charsets.warc.gz"
    mf.write_warc(path, records)
    stats = crawl.CrawlStats()
    pages = crawl.read_pages(path, stats)
    assert len(pages) == 2 * len(NOT_TEXT) and stats.errors == []
    assert [(t in p["html"], p["charset"]) for p, (t, _) in zip(pages, want)] == \
        [(True, c) for _, c in want]
    assert {p["charset_from"] for p in pages} == {"fallback"}
    assert stats.bad_charsets == {label: 2 for label in NOT_TEXT}
    # the whole pipeline runs on it too
    from llmlab.data import pipeline

    docs, report = pipeline.clean_crawl(path, progress=False)
    assert report["crawl"]["responses"] == 2 * len(NOT_TEXT)


def test_a_good_label_after_a_bad_one_is_used():
    body = '<meta charset="windows-1252"><p>Hes\xf6ra</p>'.encode("cp1252")
    assert crawl.detect_charset(body, "text/html; charset=hex") == ("cp1252", "meta")
    assert crawl.declared_charsets(body, "text/html; charset=hex") == \
        [("hex", "header"), ("windows-1252", "meta")]


@pytest.mark.parametrize("gzip_", [True, False], ids=["gzip", "plain"])
def test_revisits_and_complete_plain_warcs_are_no_errors(tmp_path, gzip_):
    mf = _fixtures_script()
    records = [{"type": "warcinfo"}]
    for i in range(3):
        records.append({"url": f"http://r.example/{i}", "body": _html(i).encode("utf-8"),
                        "content_type": "text/html; charset=utf-8"})
    records.append({"type": "revisit", "url": "http://r.example/1", "of": "http://r.example/1"})
    records.append({"url": "http://r.example/3", "body": _html(3).encode("utf-8"),
                    "content_type": "text/html"})
    path = tmp_path / ("r.warc.gz" if gzip_ else "r.warc")
    mf.write_warc(path, records, gzip=gzip_)
    stats = crawl.CrawlStats()
    pages = crawl.read_pages(path, stats)
    assert [p["url"] for p in pages] == [f"http://r.example/{i}" for i in range(4)]
    assert stats.errors == []
    assert stats.skipped_types == {"warcinfo": 1, "revisit": 1}
    assert (stats.records, stats.responses) == (6, 4)


def test_plain_warc_resynchronises_after_garbage(tmp_path):
    """Garbage between records of an uncompressed WARC: each stretch is one error at its
    offset, and every good record after it is read."""
    mf = _fixtures_script()
    records = [{"url": f"http://g.example/{i}", "body": _html(i).encode("utf-8"),
                "content_type": "text/html"} for i in range(5)]
    clean = tmp_path / "clean.warc"
    offsets = mf.write_warc(clean, records, gzip=False) + [clean.stat().st_size]
    data = clean.read_bytes()
    parts = [data[offsets[i]:offsets[i + 1]] for i in range(5)]
    junk1 = b"\x00garbage WARC/1.0 not at a line start \xff\xfe" * 5
    junk2 = b"HTTP/1.1 200 OK\r\nnot a record\r\n\r\n"
    bad = parts[0] + junk1 + parts[1] + parts[2] + junk2 + parts[3] + parts[4]
    path = tmp_path / "bad.warc"
    path.write_bytes(bad)
    stats = crawl.CrawlStats()
    pages = crawl.read_pages(path, stats)
    assert [p["url"] for p in pages] == [f"http://g.example/{i}" for i in range(5)]
    junk2_at = len(parts[0] + junk1 + parts[1] + parts[2])
    assert [o for o, _ in stats.errors] == [len(parts[0]), junk2_at]
    # and the pages are the same ones a clean read gives
    assert [p["html"] for p in pages] == [p["html"] for p in crawl.read_pages(clean)]


def test_plain_warc_cut_off_is_still_reported(tmp_path):
    mf = _fixtures_script()
    records = [{"url": f"http://c.example/{i}", "body": _html(i).encode("utf-8"),
                "content_type": "text/html"} for i in range(3)]
    path = tmp_path / "cut.warc"
    offsets = mf.write_warc(path, records, gzip=False)
    data = path.read_bytes()
    path.write_bytes(data[:offsets[2] + (len(data) - offsets[2]) // 2])
    stats = crawl.CrawlStats()
    pages = crawl.read_pages(path, stats)
    assert [p["url"] for p in pages] == ["http://c.example/0", "http://c.example/1"]
    assert len(stats.errors) == 1 and stats.errors[0][0] == offsets[2]


def test_read_pages_without_stats_keeps_its_report():
    pages = crawl.read_pages(ROOT / "data" / "fixtures" / "tiny.warc.gz")
    assert isinstance(pages, list) and len(pages) == 3
    assert pages.stats.skipped_types == {"warcinfo": 1, "revisit": 1, "text/plain": 1}
    assert pages.stats.bad_charsets == {"base64": 1, "rot13": 1}
    assert pages.stats.errors == [] and pages.stats.records == 6
    given = crawl.CrawlStats()
    assert crawl.read_pages(ROOT / "data" / "fixtures" / "tiny.warc.gz", given).stats is given


def test_shipped_fixture_is_what_the_script_writes_now(tmp_path):
    mf = _fixtures_script()
    written = mf.write_fixtures(tmp_path)
    for p in written:
        shipped = ROOT / "data" / "fixtures" / p.name
        assert shipped.read_bytes() == p.read_bytes(), f"run scripts/make_fixtures.py: {p.name}"
    assert (ROOT / "data" / "README.md").read_text().count("scripts/make_fixtures.py") >= 1
    pages = crawl.read_pages(ROOT / "data" / "fixtures" / "tiny.warc.gz")
    assert [(p["charset"], p["charset_from"]) for p in pages] == \
        [("utf-8", "header"), ("cp1252", "fallback"), ("utf-8", "fallback")]
    assert all(mf.TEXT in p["html"] for p in pages)


# --------------------------------------------------------------------------------------------
# Reproducible artifacts: the gzip writers store no time and no name (issue 17, item 7)
# --------------------------------------------------------------------------------------------


def test_gzip_artifacts_are_byte_identical_when_rebuilt(tmp_path, monkeypatch):
    """truth.jsonl.gz (the crawl artifact) and corpus.jsonl.gz, written twice at different
    times under different names, are the same bytes; the gzip header's MTIME field is 0."""
    import time

    from llmlab import world as world_mod
    from llmlab.data import pipeline

    w = stages.get_world("smoke")
    docs = [{"url": f"http://d.example/{i}", "source": "web", "kind": "k", "text": f"{TEXT} {i}"}
            for i in range(20)]
    clock = iter([1_000_000_000.0, 1_700_000_000.0, 1_000_000_000.0, 1_700_000_000.0])
    monkeypatch.setattr(time, "time", lambda: next(clock))     # two different 'now's
    paths = {}
    for name, write in (("truth", lambda p: world_mod.write_truth(w, p)),
                        ("corpus", lambda p: pipeline.write_corpus(docs, p))):
        a, b = tmp_path / f"{name}.jsonl.gz", tmp_path / f"{name}-rebuilt.tmp"
        write(a)
        write(b)
        assert a.read_bytes() == b.read_bytes(), name
        assert a.read_bytes()[4:8] == b"\0\0\0\0", name                # MTIME
        paths[name] = a
    assert [r["url"] for r in world_mod.read_truth(paths["truth"])] == [p.url for p in w.pages]
    assert pipeline.read_corpus(paths["corpus"]) == docs
