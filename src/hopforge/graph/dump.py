"""Streaming access to MediaWiki XML dumps: plain ``.xml``, ``.xml.bz2`` and multistream bz2.

Nothing here loads a dump: bytes are decompressed in blocks and cut into
``<page>…</page>`` chunks on the fly (``<`` inside page text is always escaped as
``&lt;``, so a literal ``<page>`` can only be markup). Memory is bounded by the
largest single page.

Errors: a dump that cannot be read at all (missing, empty, not bz2, no
``<mediawiki>`` header) raises :class:`DumpError` naming the file and byte offset.
A dump that breaks part-way (truncated or corrupt bz2, cut mid-``<page>``) yields
a :class:`DumpBreak` after the last good page so callers keep everything before it.
"""

from __future__ import annotations

import bz2
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hopforge.errors import DumpError
from hopforge.text.titles import SiteInfo

BLOCK = 1 << 20
# Compressed bytes fed to the decompressor per call: small enough that a corrupt block is
# located to within 64 KiB and the output of the good blocks before it is kept.
BZ2_READ = 1 << 16
BZ2_MAGIC = b"BZh"
_TITLE = re.compile(rb"<title>(.*?)</title>", re.S)
_NS = re.compile(rb"<ns>(-?\d+)</ns>")
_ID = re.compile(rb"<id>(\d+)</id>")
_REDIRECT = re.compile(rb"<redirect\b")


@dataclass(frozen=True)
class DumpBreak:
    """The dump stops being readable here; everything before was yielded."""

    reason: str  # truncated_dump | corrupt_compressed_stream | truncated_page
    offset: int  # compressed byte offset where possible, else uncompressed
    compressed: bool
    detail: str


@dataclass(frozen=True)
class PageHead:
    """What a cheap regex scan of a raw page chunk reveals (no XML parse)."""

    title: str
    ns: int
    page_id: int | None
    is_redirect: bool


def xml_unescape(s: str) -> str:
    return s.replace("&quot;", '"').replace("&#039;", "'").replace("&lt;", "<").replace("&gt;", ">").replace(
        "&amp;", "&")


def page_head(chunk: bytes) -> PageHead:
    """Title, namespace, id and redirect flag of a page chunk (scans only up to <revision>)."""
    head = chunk[: chunk.find(b"<revision")] if b"<revision" in chunk else chunk[:4096]
    t = _TITLE.search(head)
    n = _NS.search(head)
    i = _ID.search(head)
    return PageHead(
        title=xml_unescape(t.group(1).decode("utf-8", "replace")) if t else "",
        ns=int(n.group(1)) if n else 0,
        page_id=int(i.group(1)) if i else None,
        is_redirect=bool(_REDIRECT.search(head)),
    )


def is_bz2(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(3) == BZ2_MAGIC


def index_path_for(path: Path) -> Path | None:
    """The multistream index beside ``path`` (``X-multistream.xml.bz2`` -> ``X-multistream-index.txt.bz2``)."""
    name = path.name
    for suffix in (".xml.bz2", ".bz2"):
        if name.endswith(suffix):
            cand = path.with_name(name[: -len(suffix)] + "-index.txt.bz2")
            if cand.exists():
                return cand
    return None


class _Bz2Blocks:
    """Decompressed blocks of a (possibly multi-stream) bz2 file, tracking the compressed offset."""

    def __init__(self, path: Path, start: int = 0, end: int | None = None) -> None:
        self.path, self.start, self.end = path, start, end
        self.offset = start  # compressed bytes consumed so far
        self.error: DumpBreak | None = None

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(self.start)
            dec = bz2.BZ2Decompressor()
            fresh = True
            while True:
                want = BZ2_READ if self.end is None else min(BZ2_READ, self.end - self.offset)
                raw = f.read(want) if want > 0 else b""
                if not raw:
                    # A byte range (multistream batch) the file ends inside, even at a stream boundary.
                    # A range that starts past the end is left to the range the file ends in.
                    cut_short = self.end is not None and self.offset < self.end and self.start <= size
                    if (not fresh and not dec.eof) or cut_short:
                        self.error = DumpBreak("truncated_dump", self.offset, True,
                                               f"{self.path}: bz2 stream ends early at compressed byte {self.offset}")
                    return
                pos = self.offset
                self.offset += len(raw)
                while raw:
                    try:
                        out = dec.decompress(raw)
                    except (OSError, EOFError, ValueError) as e:
                        self.error = DumpBreak("corrupt_compressed_stream", pos, True,
                                               f"{self.path}: invalid bz2 data within compressed bytes "
                                               f"{pos}..{pos + BZ2_READ} ({e})")
                        return
                    fresh = False
                    if out:
                        yield out
                    if dec.eof:  # concatenated streams (multistream dumps, pbzip2 output)
                        raw = dec.unused_data
                        pos = self.offset - len(raw)
                        dec = bz2.BZ2Decompressor()
                        fresh = not raw
                        if raw[:3] and raw[:3] != BZ2_MAGIC[: len(raw[:3])]:
                            # Trailing garbage after a complete stream.
                            self.error = DumpBreak("corrupt_compressed_stream", pos, True,
                                                   f"{self.path}: bytes after the last bz2 stream at compressed "
                                                   f"byte {pos} are not bz2")
                            return
                    else:
                        raw = b""


class _PlainBlocks:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.error: DumpBreak | None = None

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            while raw := f.read(BLOCK):
                self.offset += len(raw)
                yield raw


def open_blocks(path: Path, start: int = 0, end: int | None = None) -> _Bz2Blocks | _PlainBlocks:
    """Decompressed blocks of ``path``; bz2 is detected by its magic bytes, not by the name."""
    if not path.exists():
        raise DumpError(f"dump not found: {path}")
    if path.stat().st_size == 0:
        raise DumpError(f"{path}: empty file (byte offset 0); expected a MediaWiki XML dump")
    if is_bz2(path):
        return _Bz2Blocks(path, start, end)
    if path.suffix == ".bz2":
        raise DumpError(f"{path}: not bz2 data (bad magic at byte offset 0)")
    return _PlainBlocks(path)


def iter_pages(blocks: _Bz2Blocks | _PlainBlocks, *, want_header: bool = True
               ) -> Iterator[bytes | SiteInfo | DumpBreak]:
    """Yield the SiteInfo (if ``want_header``), then each raw ``<page>…</page>`` chunk, then a DumpBreak if any.

    Raises DumpError when no ``<mediawiki>`` header can be found in a dump that should have one.
    """
    buf = b""
    header_done = not want_header
    pos = 0  # uncompressed offset of buf[0]
    for block in blocks:
        buf += block
        if not header_done:
            first = buf.find(b"<page>")
            if first < 0 and b"</siteinfo>" not in buf and len(buf) < 16 * BLOCK:
                continue
            cut = first if first >= 0 else len(buf)
            header = buf[:cut]
            if b"<mediawiki" not in header:
                raise DumpError(f"{blocks.path}: no <mediawiki> root element in the first {cut} bytes "
                                f"(byte offset 0); not a MediaWiki XML export")
            try:
                yield SiteInfo.from_xml(header[header.find(b"<mediawiki"):])
            except Exception as e:  # ParseError and friends: the header itself is unreadable
                raise DumpError(f"{blocks.path}: unreadable <siteinfo> header at byte offset 0 ({e})") from None
            header_done = True
            buf, pos = buf[cut:], pos + cut
        start = 0
        while True:
            s = buf.find(b"<page>", start)
            if s < 0:
                start = max(start, len(buf) - 8)
                break
            e = buf.find(b"</page>", s)
            if e < 0:
                start = s
                break
            e += len(b"</page>")
            yield buf[s:e]
            start = e
        buf, pos = buf[start:], pos + start
    if not header_done:
        if blocks.error is not None:
            raise DumpError(f"{blocks.error.detail}; nothing readable before it")
        if b"<mediawiki" not in buf:
            raise DumpError(f"{blocks.path}: no <mediawiki> root element (byte offset 0); "
                            f"not a MediaWiki XML export")
        yield SiteInfo.from_xml(buf[buf.find(b"<mediawiki"):])
        buf = b""
    tail_page = buf.find(b"<page>")
    if blocks.error is not None:
        yield blocks.error
    elif tail_page >= 0:
        head = page_head(buf[tail_page:])
        yield DumpBreak("truncated_page", pos + tail_page, False,
                        f"{blocks.path}: page {head.page_id} {head.title!r} is cut off at the end of the dump "
                        f"(uncompressed byte {pos + tail_page} opens a <page> that never closes)")


def iter_multistream_index(path: Path) -> Iterator[tuple[int, int, str]]:
    """(stream offset, page id, title) lines of a multistream index, in file order, streamed
    (enwiki's index has ~20M lines: a list of them costs ~2 GB, and forked workers inherit it)."""
    opener = bz2.open if is_bz2(path) else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line:
                    continue
                off, pid, title = line.split(":", 2)
                yield int(off), int(pid), title
    except (OSError, EOFError, ValueError) as e:
        raise DumpError(f"{path}: unreadable multistream index ({e})") from None


def read_multistream_index(path: Path) -> list[tuple[int, int, str]]:
    """(stream offset, page id, title) lines of a multistream index, in file order."""
    return list(iter_multistream_index(path))
