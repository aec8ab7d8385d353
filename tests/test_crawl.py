"""Reading the crawl: streaming, bad records skipped and counted, charsets (notebook 01, section 1)."""
import gzip
import io

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
