"""Write the small files shipped in ``data/fixtures/`` (and described in ``data/README.md``).

    python scripts/make_fixtures.py            # rewrite data/fixtures/
    python scripts/make_fixtures.py --out DIR  # write them somewhere else

Every file is deterministic (fixed record ids, dates and gzip headers): running the script
again gives the same bytes, and ``tests/test_crawl.py`` checks that the shipped copy equals
what this script writes now.

``tiny.warc.gz``: six gzip WARC records that exercise the crawl reader
(:mod:`llmlab.data.crawl`, notebook 01, section 1):

1. ``warcinfo``;
2. a UTF-8 page that declares ``charset=utf-8`` (read as is);
3. a windows-1252 page whose HTTP header declares ``charset=base64``, a codec that is no text
   encoding (ignored and counted; the bytes are detected as windows-1252);
4. a UTF-8 page whose ``<meta>`` declares ``charset=rot13`` (ignored and counted);
5. a ``revisit`` of page 2 (valid, no payload: counted by type, never as an error);
6. a ``text/plain`` robots.txt (skipped by content type).
"""
from __future__ import annotations

import argparse
import io
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "data" / "fixtures"
DATE = "2024-01-01T00:00:00Z"

TEXT = "Zoë Hesöra wrote “Café” stories about naïve foxes in the northern hills."


def record_id(key: str) -> str:
    """A fixed WARC-Record-ID for ``key`` (a UUID5), so the same records give the same bytes."""
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}>"


def page(title: str, meta: str = "") -> str:
    """A small HTML page around :data:`TEXT`, with an optional ``<meta>`` tag."""
    return (f"<html><head>{meta}<title>{title}</title></head>"
            f"<body><p>{TEXT}</p><p>{title}.</p></body></html>")


def write_warc(path: str | Path, records: list[dict], gzip: bool = True) -> list[int]:
    """Write ``records`` as a WARC file; returns each record's byte offset.

    A record is ``{"url", "body": bytes, "content_type"}`` (an HTTP 200 response), or
    ``{"type": "revisit", "url", "of": <url of an earlier record>}``, or
    ``{"type": "warcinfo"}``. Record ids and dates are fixed.
    """
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    offsets, digests = [], {}
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=gzip)
        for i, r in enumerate(records):
            kind = r.get("type", "response")
            fixed = {"WARC-Date": DATE, "WARC-Record-ID": record_id(f"{i}-{kind}-{r.get('url')}")}
            if kind == "warcinfo":
                rec = w.create_warcinfo_record(Path(path).name, {"software": "llmlab fixtures"})
                for k, v in fixed.items():
                    rec.rec_headers.replace_header(k, v)
            elif kind == "revisit":
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")],
                                        protocol="HTTP/1.1")
                rec = w.create_revisit_record(r["url"], digests[r["of"]], r["of"], DATE,
                                              http_headers=http)
                for k, v in fixed.items():
                    rec.rec_headers.replace_header(k, v)
            else:
                http = StatusAndHeaders("200 OK", [("Content-Type", r["content_type"])],
                                        protocol="HTTP/1.1")
                rec = w.create_warc_record(r["url"], "response", payload=io.BytesIO(r["body"]),
                                           http_headers=http, warc_headers_dict=fixed)
                digests[r["url"]] = rec.rec_headers.get_header("WARC-Payload-Digest")
            offsets.append(fh.tell())
            w.write_record(rec)
    return offsets


def tiny_records() -> list[dict]:
    """The records of ``tiny.warc.gz`` (see the module docstring)."""
    return [
        {"type": "warcinfo"},
        {"url": "http://fixture.example/utf8", "content_type": "text/html; charset=utf-8",
         "body": page("utf8").encode("utf-8")},
        {"url": "http://fixture.example/base64-header",
         "content_type": "text/html; charset=base64", "body": page("latin").encode("cp1252")},
        {"url": "http://fixture.example/rot13-meta", "content_type": "text/html",
         "body": page("rot", '<meta charset="rot13">').encode("utf-8")},
        {"type": "revisit", "url": "http://fixture.example/utf8",
         "of": "http://fixture.example/utf8"},
        {"url": "http://fixture.example/robots.txt", "content_type": "text/plain",
         "body": b"User-agent: *\nDisallow:\n"},
    ]


def write_fixtures(out: str | Path = FIXTURES) -> list[Path]:
    """Write every fixture into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "tiny.warc.gz"
    write_warc(path, tiny_records(), gzip=True)
    return [path]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(FIXTURES), help="output folder (default: data/fixtures)")
    args = ap.parse_args(argv)
    for p in write_fixtures(args.out):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
