"""Reading a crawl: stream WARC records, show their headers, decode their HTML (notebook 01, section 1).

Common Crawl ships the web as gzip WARC files: one gzip *member* per record, so a reader can
stream a 1 GB file record by record without loading it, and can skip to any record's offset.
The same reader works on the world's crawl and on a real Common Crawl file (notebook 01,
"Reading a real Common Crawl file", shows how to download one on Colab).

1. :func:`iter_records` streams ``response`` records with warcio, gzip or plain (uncompressed)
   WARC alike. A malformed or truncated record (bad WARC header, corrupt gzip, wrong digest,
   cut-off file) is counted in :class:`CrawlStats` with its byte offset and skipped; the reader
   resynchronises at the next gzip member or the next ``WARC/1.x`` header line and the run goes
   on. A ``revisit`` record (a page seen before, stored without its payload) is valid: counted
   under its type, not as an error.
2. :func:`detect_charset` picks the page's encoding: the HTTP ``Content-Type`` header first,
   then ``<meta charset>`` in the first bytes of the page, then UTF-8, then windows-1252. Only
   real text encodings count: a label that names one of Python's other codecs (``base64``,
   ``rot13``, ``zip``, ``idna``, ``undefined``, ...) is ignored like an unknown one, and
   :func:`read_pages` counts it in ``CrawlStats.bad_charsets``.
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
WARC_LINE = re.compile(rb"WARC/1\.[01]\r?\n")   # the first line of an uncompressed record


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
    bad_charsets: dict = field(default_factory=dict)    # declared charset label ignored -> count

    @property
    def malformed(self) -> int:
        return len(self.errors)


def _is_member(fh, pos: int) -> bool:
    """Whether a gzip member that decompresses into a WARC header starts at ``pos``."""
    fh.seek(pos)
    try:
        return zlib.decompressobj(31).decompress(fh.read(4096), 16).startswith(b"WARC/")
    except zlib.error:
        return False


def _next_record(fh, start: int, chunk: int = 1 << 16) -> int | None:
    """Offset of the next record at or after ``start``, or None: a gzip member that really
    decompresses into a WARC header, or (uncompressed WARC) a ``WARC/1.0`` + CRLF line.

    Streams the file in chunks (never loads it); used to resynchronise after a bad record.
    A false start (the line quoted inside a page) fails to parse and is skipped in turn.
    """
    pattern = re.compile(re.escape(GZIP_MAGIC) + b"|" + WARC_LINE.pattern)
    pos = start
    while True:
        fh.seek(pos)
        buf = fh.read(chunk + 16)                         # 16: a match across the boundary
        if not buf:
            return None
        for m in pattern.finditer(buf):
            i = m.start()
            if i >= chunk:
                break
            if not m.group().startswith(GZIP_MAGIC) or _is_member(fh, pos + i):
                return pos + i
        if len(buf) <= chunk:
            return None
        pos += chunk


def _skip_blank_lines(fh, pos: int, size: int) -> int:
    """The first offset at or after ``pos`` that is not CR or LF (``size`` if none).

    An uncompressed WARC ends every record with two CRLFs that warcio's record length leaves
    out; a file that ends right after them is complete, not truncated.
    """
    fh.seek(pos)
    while pos < size:
        buf = fh.read(4096)
        rest = buf.lstrip(b"\r\n")
        if rest:
            return pos + len(buf) - len(rest)
        pos += len(buf)
    return size


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
                    # 1) a recorded digest must match; warcio leaves a cut-off record unchecked
                    #    (passed None). A revisit has no payload: its payload digest names the
                    #    earlier capture, so warcio rightly checks nothing there.
                    has_digest = rec.rec_headers.get_header("WARC-Block-Digest") or \
                        rec.rec_headers.get_header("WARC-Payload-Digest")
                    checked = rec.digest_checker.passed
                    if checked is False or (checked is None and has_digest
                                            and rec.rec_type != "revisit"):
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
            end = _skip_blank_lines(fh, end, size)   # an uncompressed record's closing CRLFs
            if failed is not None:
                failed = (end, failed[1])
            elif end < size:
                # warcio stops quietly at a record cut off by the end of the file
                failed = (end, "truncated record at the end of the file")
            if failed is None:
                break
            stats.errors.append(failed)
            start = _next_record(fh, failed[0] + 1)


# --------------------------------------------------------------------------------------------
# Charset detection and decoding
# --------------------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-:.]+)", re.I)


# Python codecs that look up by name but are not charsets: bytes-to-bytes and str-to-str
# transforms (base64, quoted-printable, hex, zip, bz2, uu, rot13) fail the ``_is_text_encoding``
# test; these pass it yet do not decode a web page's bytes into its text.
NOT_CHARSETS = frozenset({"idna", "punycode", "undefined", "unicode-escape",
                          "raw-unicode-escape", "charmap"})


def _codec(name: str | None) -> str | None:
    """The Python codec for a charset label, or None if it names no real text encoding.

    Labels are mapped as browsers do: "iso-8859-1" and "latin1" mean windows-1252. A label that
    Python resolves to a codec that is not a text encoding (a transform like base64, or
    idna) is rejected like an unknown label.

    >>> _codec("ISO-8859-1"), _codec("utf8"), _codec("base64"), _codec("idna"), _codec("nosuch")
    ('cp1252', 'utf-8', None, None, None)
    """
    if not name:
        return None
    label = name.strip().lower()
    if label in ("iso-8859-1", "latin1", "latin-1", "us-ascii", "ascii", "l1"):
        label = "windows-1252"   # the WHATWG encoding standard's mapping
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in NOT_CHARSETS:
        return None
    return info.name


def declared_charsets(body: bytes, content_type: str | None = None) -> list[tuple[str, str]]:
    """The charset labels a page declares, in the order they are tried: ``[(label, where)]``.

    >>> declared_charsets(b'<meta charset="rot13"><p>x</p>', "text/html; charset=base64")
    [('base64', 'header'), ('rot13', 'meta')]
    """
    out = []
    m = _HEADER_CHARSET.search(content_type) if content_type else None
    if m:
        out.append((m.group(1), "header"))
    m = _META_CHARSET.search(body[:2048])
    if m:
        out.append((m.group(1).decode("ascii", "replace"), "meta"))
    return out


def detect_charset(body: bytes, content_type: str | None = None) -> tuple[str, str]:
    """The charset of an HTML body and where it came from: ``(codec, "header"|"meta"|"fallback")``.

    1) the ``charset=`` of the HTTP Content-Type header; 2) a ``<meta charset>`` (or
    ``http-equiv``) in the first 2 KB; 3) UTF-8 if the bytes decode as UTF-8, else windows-1252.
    A declared label that is not a real text encoding (:func:`_codec`) is skipped.

    >>> detect_charset(b"<p>caf\\xe9</p>", "text/html; charset=windows-1252")
    ('cp1252', 'header')
    >>> detect_charset(b"<p>caf\\xe9</p>")
    ('cp1252', 'fallback')
    >>> detect_charset(b"<p>caf\\xc3\\xa9</p>", "text/html; charset=quoted-printable")
    ('utf-8', 'fallback')
    """
    for label, where in declared_charsets(body, content_type):
        codec = _codec(label)
        if codec and _decodes(body, codec):
            return codec, where
    try:
        body.decode("utf-8")
        return "utf-8", "fallback"
    except UnicodeDecodeError:
        return "cp1252", "fallback"


def _decodes(body: bytes, codec: str) -> bool:
    """Whether ``codec`` decodes ``body`` at all with errors replaced (some codecs raise anyway)."""
    try:
        body[:4096].decode(codec, errors="replace")
        return True
    except (UnicodeError, LookupError, ValueError, TypeError):
        return False


def decode_html(body: bytes, content_type: str | None = None) -> str:
    """The page's text, decoded with :func:`detect_charset` (undecodable bytes become U+FFFD)."""
    codec, _ = detect_charset(body, content_type)
    return body.decode(codec, errors="replace")


class Pages(list):
    """The list :func:`read_pages` returns, with the reader's report as ``.stats``."""

    stats: CrawlStats


def read_pages(path: str | Path, stats: CrawlStats | None = None) -> Pages:
    """Every HTML response as ``{"url", "offset", "charset", "charset_from", "html"}``.

    The result is a list; its ``.stats`` attribute is the :class:`CrawlStats` of the read (the
    ``stats`` passed in, filled, or a new one), so a caller that passed none still sees what
    was skipped. A declared charset that is no text encoding is counted in
    ``stats.bad_charsets`` and the page is decoded as if it declared none.
    """
    stats = stats if stats is not None else CrawlStats()
    pages = Pages()
    pages.stats = stats
    for r in iter_records(path, stats):
        ctype = r.header("Content-Type")
        for label, _ in declared_charsets(r.body, ctype):
            codec = _codec(label)
            if codec is None or not _decodes(r.body, codec):
                key = label.strip().lower()
                stats.bad_charsets[key] = stats.bad_charsets.get(key, 0) + 1
        codec, where = detect_charset(r.body, ctype)
        pages.append({"url": r.url, "offset": r.offset, "charset": codec, "charset_from": where,
                      "html": r.body.decode(codec, errors="replace")})
    return pages
