"""Reading a crawl: stream WARC records, show their headers, decode their HTML (notebook 01, section 1).

Common Crawl ships the web as gzip WARC files: one gzip *member* per record, so a reader can
stream a 1 GB file record by record without loading it, and can skip to any record's offset.
The same reader works on the world's crawl and on a real Common Crawl file (notebook 01,
"Reading a real Common Crawl file", shows how to download one on Colab).

1. :func:`iter_records` streams ``response`` records with warcio. A malformed or truncated
   record (bad WARC header, corrupt gzip, wrong digest, cut-off file) is counted in
   :class:`CrawlStats` with its byte offset and skipped; the reader resynchronises at the next
   gzip member and the run goes on.
2. :func:`detect_charset` picks the page's encoding: the HTTP ``Content-Type`` header first,
   then ``<meta charset>`` in the first bytes of the page, then UTF-8, then windows-1252.
3. :func:`decode_html` turns the body bytes into text with that charset.
"""
from __future__ import annotations

import codecs
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

GZIP_MAGIC = b"\x1f\x8b\x08"


@dataclass
class Record:
    """One HTTP response from a WARC file, its body read in full."""

    offset: int                    # byte offset of the record's gzip member in the file
    url: str                       # WARC-Target-URI
    warc_headers: list             # [(name, value)] of the WARC record header
    status: str                    # HTTP status line, e.g. "200 OK"
    http_headers: list             # [(name, value)] of the HTTP response header
    body: bytes                    # the HTTP payload (the page's bytes, transfer encodings undone)

    def header(self, name: str, default: str | None = None) -> str | None:
        """An HTTP header by name (case-insensitive)."""
        for k, v in self.http_headers:
            if k.lower() == name.lower():
                return v
        return default

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()


@dataclass
class CrawlStats:
    """What the reader saw: records by type, and every malformed record with its offset."""

    records: int = 0               # records parsed (any WARC-Type)
    responses: int = 0             # HTTP responses yielded
    skipped_types: dict = field(default_factory=dict)   # WARC-Type or content type -> count
    errors: list = field(default_factory=list)          # [(offset, reason)] of skipped records

    @property
    def malformed(self) -> int:
        return len(self.errors)


def _next_member(fh, start: int, chunk: int = 1 << 16) -> int | None:
    """Offset of the next gzip member at or after ``start`` that really decompresses, or None.

    Streams the file in chunks (never loads it); used to resynchronise after a bad record.
    """
    pos = start
    while True:
        fh.seek(pos)
        buf = fh.read(chunk + len(GZIP_MAGIC))
        if len(buf) < len(GZIP_MAGIC):
            return None
        i = buf.find(GZIP_MAGIC)
        while i != -1 and i < chunk:
            fh.seek(pos + i)
            probe = fh.read(4096)
            try:  # a real member start decompresses into a WARC header
                out = zlib.decompressobj(31).decompress(probe, 16)
                if out.startswith(b"WARC/"):
                    return pos + i
            except zlib.error:
                pass
            i = buf.find(GZIP_MAGIC, i + 1)
        pos += chunk


def iter_records(path: str | Path, stats: CrawlStats | None = None,
                 html_only: bool = True) -> Iterator[Record]:
    """Stream the HTTP responses of a (gzip) WARC file, skipping and counting bad records.

    ``stats`` (a :class:`CrawlStats`) is filled in as the file is read: counts, and for each
    malformed record its byte offset and the reason. With ``html_only`` only ``text/html``
    responses are yielded (Common Crawl files also hold robots.txt, images, PDFs, redirects).
    Notebook 01, section 1.
    """
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    stats = stats if stats is not None else CrawlStats()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"WARC file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        start = 0
        while start is not None and start < size:
            fh.seek(start)
            it = ArchiveIterator(fh, check_digests=True)
            end = start                      # where the last good record ended
            failed = None
            try:
                for rec in it:
                    stats.records += 1
                    body = rec.content_stream().read()   # read before asking for the offset:
                    it.read_to_end()                     # warcio skips the body to compute it
                    offset = it.get_record_offset()
                    end = offset + it.get_record_length()
                    # 1) a digest that was recorded must match (catches truncated records)
                    has_digest = rec.rec_headers.get_header("WARC-Block-Digest") or \
                        rec.rec_headers.get_header("WARC-Payload-Digest")
                    if has_digest and rec.digest_checker.passed is not True:
                        stats.errors.append((offset, "digest mismatch or truncated record"))
                        continue
                    # 2) keep HTTP responses (of HTML pages)
                    wtype = rec.rec_type
                    if wtype != "response" or rec.http_headers is None:
                        stats.skipped_types[wtype] = stats.skipped_types.get(wtype, 0) + 1
                        continue
                    r = Record(offset=offset, url=rec.rec_headers.get_header("WARC-Target-URI"),
                               warc_headers=list(rec.rec_headers.headers),
                               status=rec.http_headers.statusline,
                               http_headers=list(rec.http_headers.headers), body=body)
                    if html_only and r.content_type not in ("text/html", "application/xhtml+xml"):
                        key = r.content_type or "no content type"
                        stats.skipped_types[key] = stats.skipped_types.get(key, 0) + 1
                        continue
                    stats.responses += 1
                    yield r
            except (ArchiveLoadFailed, zlib.error, EOFError, OSError, ValueError) as exc:
                msg = "".join(c if c.isprintable() and ord(c) < 128 else "?" for c in str(exc).strip())
                failed = (end, f"{type(exc).__name__}: {msg.splitlines()[0][:60] if msg else ''}")
            if failed is None and end < size:
                # warcio stops quietly at a record cut off by the end of the file
                failed = (end, "truncated record at the end of the file")
            if failed is None:
                break
            stats.errors.append(failed)
            start = _next_member(fh, failed[0] + 1)


# --------------------------------------------------------------------------------------------
# Charset detection and decoding
# --------------------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-:.]+)", re.I)


def _codec(name: str | None) -> str | None:
    """The Python codec for a charset label, or None if Python does not know it.

    Labels are mapped as browsers do: "iso-8859-1" and "latin1" mean windows-1252.
    """
    if not name:
        return None
    label = name.strip().lower()
    if label in ("iso-8859-1", "latin1", "latin-1", "us-ascii", "ascii", "l1"):
        label = "windows-1252"   # the WHATWG encoding standard's mapping
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def detect_charset(body: bytes, content_type: str | None = None) -> tuple[str, str]:
    """The charset of an HTML body and where it came from: ``(codec, "header"|"meta"|"fallback")``.

    1) the ``charset=`` of the HTTP Content-Type header; 2) a ``<meta charset>`` (or
    ``http-equiv``) in the first 2 KB; 3) UTF-8 if the bytes decode as UTF-8, else windows-1252.

    >>> detect_charset(b"<p>caf\\xe9</p>", "text/html; charset=windows-1252")
    ('cp1252', 'header')
    >>> detect_charset(b"<p>caf\\xe9</p>")
    ('cp1252', 'fallback')
    """
    if content_type:
        m = _HEADER_CHARSET.search(content_type)
        codec = _codec(m.group(1)) if m else None
        if codec:
            return codec, "header"
    m = _META_CHARSET.search(body[:2048])
    codec = _codec(m.group(1).decode("ascii", "replace")) if m else None
    if codec:
        return codec, "meta"
    try:
        body.decode("utf-8")
        return "utf-8", "fallback"
    except UnicodeDecodeError:
        return "cp1252", "fallback"


def decode_html(body: bytes, content_type: str | None = None) -> str:
    """The page's text, decoded with :func:`detect_charset` (undecodable bytes become U+FFFD)."""
    codec, _ = detect_charset(body, content_type)
    return body.decode(codec, errors="replace")


def read_pages(path: str | Path, stats: CrawlStats | None = None) -> list[dict]:
    """Every HTML response as ``{"url", "offset", "charset", "charset_from", "html"}``."""
    pages = []
    for r in iter_records(path, stats):
        codec, where = detect_charset(r.body, r.header("Content-Type"))
        pages.append({"url": r.url, "offset": r.offset, "charset": codec, "charset_from": where,
                      "html": r.body.decode(codec, errors="replace")})
    return pages
