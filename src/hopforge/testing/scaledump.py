"""Grow a realistic Wikipedia dump of any size from the shared fixtures (benchmarks, not data).

``python -m hopforge.testing.scaledump --pages 100000 --out /work/bench-scale`` writes
``scale-100k-multistream.xml.bz2`` and ``scale-100k-multistream-index.txt.bz2`` in the layout of
Wikimedia's ``pages-articles-multistream`` dumps: one bz2 stream holding ``<mediawiki>`` and
``<siteinfo>``, then streams of :data:`STREAM_PAGES` pages, then a stream closing the root; the
index has one ``offset:page_id:title`` line per page, offset being its stream's compressed byte
offset. Ingest's parallel path (one batch per range of streams) reads it as it reads the real dump.

How the pages are made realistic:

- **Wikitext** is real: each article is a real article of the source dump (``enwiki-233``)
  cut at a paragraph boundary outside any template, table or link, to a length drawn from a
  log-normal (median :data:`MEDIAN_CHARS`, σ :data:`SIGMA`; enwiki's articles are mostly short and
  a few are very long). The infobox and lead come first, as on Wikipedia, so infobox facts
  survive the cut. The page keeps its real categories.
- **Titles** are renamed: ``<source title> (<synthetic name>)``, the name made of syllables, so
  every page has a unique title and the vocabulary grows with the dump as entity names do.
- **Links** are rewired: each article link of the cut text keeps its anchor. A link whose real
  target is another source article points to one of that article's copies, so an infobox's
  ``capital = [[Oslo]]`` still names an Oslo and walks follow facts that mean something. Any
  other link points to a generated page chosen with probability ∝ rank^-:data:`ZIPF_A` over a
  random order of pages (in-degree then follows a power law with exponent ≈ 1 + 1/a ≈ 2.1, as
  measured on enwiki), or, for :data:`LOCAL_SHARE` of links, a page near the linking page
  (topical clusters). Copies are chosen by the same popularity law. The out-degree of a page
  is that of its real source text, cut. :data:`REDIRECT_LINK_SHARE` of the other links go
  through a redirect.
- **Redirects**: :data:`REDIRECT_SHARE` of pages are ``#REDIRECT`` pages to an article, with a
  ``<redirect title=…/>`` element, as in real dumps (about half of enwiki's main namespace).

Deterministic for a given ``seed``. Generation holds one chunk of pages in memory and
compresses the streams on ``workers`` processes.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from hopforge.graph.dump import iter_pages, open_blocks
from hopforge.text.titles import SiteInfo

STREAM_PAGES = 100  # pages per bz2 stream, as in Wikimedia's multistream dumps
MEDIAN_CHARS = 3_500
SIGMA = 1.1
LEAD_PROSE = 300
MIN_CHARS = 400
ZIPF_A = 0.9
LOCAL_SHARE = 0.3
LOCAL_SPAN = 500
REDIRECT_SHARE = 0.35
REDIRECT_LINK_SHARE = 0.08
CHUNK_PAGES = 20_000

DEFAULT_SOURCE = Path(__file__).resolve().parents[3].parent / "shared" / "wiki" / "enwiki-233.xml.bz2"

_LINK = re.compile(r"\[\[([^\[\]|#]*)(#[^\[\]|]*)?(\|[^\[\]]*)?\]\]")
_NAMESPACED = re.compile(r"^\s*:?\s*([A-Za-z ]+):")
_SYLLABLES = ("ka", "ri", "to", "ven", "mar", "sel", "do", "lin", "qua", "bre", "zu", "tal", "nor", "vi", "es",
              "gan", "rho", "mel", "dru", "fa", "ost", "wen", "cy", "pel", "jor", "ash", "ti", "lum", "or", "sak")


@dataclass(frozen=True)
class Source:
    title: str
    text: str
    cuts: np.ndarray  # offsets of paragraph breaks at nesting depth 0 (cut points), ascending
    categories: str  # the page's [[Category:…]] lines
    lead: int  # a cut keeps at least this much: the hatnotes, the infobox and some of the lead's prose


def size_label(pages: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if pages >= div and pages % div == 0:
            return f"{pages // div}{unit}"
    return str(pages)


def paths_for(out: Path, pages: int) -> tuple[Path, Path]:
    stem = f"scale-{size_label(pages)}-multistream"
    return out / f"{stem}.xml.bz2", out / f"{stem}-index.txt.bz2"


def _depth_zero_breaks(text: str) -> tuple[np.ndarray, int]:
    """Offsets of "\\n\\n" outside ``{{…}}``, ``{|…|}`` and ``[[…]]`` (where a cut leaves valid
    wikitext), and the offset of the first bold ``\'\'\'`` outside them (the lead's subject), or -1."""
    out = []
    depth = 0
    bold = -1
    for m in re.finditer(r"\{\{|\}\}|\{\||\|\}|\[\[|\]\]|\n\n|\'\'\'", text):
        tok = m.group()
        if tok in ("{{", "{|", "[["):
            depth += 1
        elif tok in ("}}", "|}", "]]"):
            depth = max(0, depth - 1)
        elif depth == 0:
            if tok == "\n\n":
                out.append(m.start())
            elif bold < 0:
                bold = m.start()
    return np.asarray(out, np.int64), bold


def load_sources(path: Path) -> tuple[bytes, list[Source]]:
    """The dump's ``<mediawiki …><siteinfo>…</siteinfo>`` header and its non-redirect main-namespace articles."""
    header = b""
    sources: list[Source] = []
    for item in iter_pages(open_blocks(path)):
        if isinstance(item, SiteInfo):
            continue
        if not isinstance(item, bytes):
            raise ValueError(f"{path}: {item.detail}")  # noqa: TRY004 (a DumpBreak: bad data, not a bad call)
        el = ET.fromstring(item)
        if (el.findtext("ns") or "0") != "0" or el.find("redirect") is not None:
            continue
        text = el.findtext("revision/text") or ""
        if len(text) < MIN_CHARS:
            continue
        cats = "\n".join(m.group() for m in re.finditer(r"\[\[Category:[^\[\]]*\]\]", text))
        body = re.sub(r"\[\[Category:[^\[\]]*\]\]\n?", "", text)
        cuts, bold = _depth_zero_breaks(body)
        sources.append(Source(el.findtext("title") or "", body, cuts, cats, bold + LEAD_PROSE if bold >= 0 else 0))
    with bz2.open(path, "rb") as f:
        head = f.read(1 << 20)
    header = head[: head.index(b"</siteinfo>") + len(b"</siteinfo>")] + b"\n"
    if not sources:
        raise ValueError(f"{path}: no article of at least {MIN_CHARS} characters to grow a dump from")
    return header, sources


def synthetic_name(i: int) -> str:
    """A pronounceable unique name for page ``i`` ("Karivel", "Tosemar Dru", …)."""
    h = int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little"), digest_size=8).digest(), "little")
    parts = []
    n = 2 + h % 3
    h //= 3
    for _ in range(n):
        parts.append(_SYLLABLES[h % len(_SYLLABLES)])
        h //= len(_SYLLABLES)
    name = "".join(parts).capitalize()
    return f"{name} {i:x}" if i >= 0 else name


class Plan:
    """Which source, length and title every generated page gets (cheap arrays, the whole dump)."""

    def __init__(self, pages: int, sources: list[Source], seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.n = pages
        self.is_redirect = rng.random(pages) < REDIRECT_SHARE
        self.is_redirect[0] = False
        self.articles = np.flatnonzero(~self.is_redirect)
        self.source = rng.integers(0, len(sources), pages)
        self.redirect_target = self.articles[rng.integers(0, len(self.articles), pages)]
        self.redirects = np.flatnonzero(self.is_redirect)
        self.length = np.maximum(MIN_CHARS, rng.lognormal(np.log(MEDIAN_CHARS), SIGMA, pages)).astype(np.int64)
        # Popularity: a random order of the articles, weighted rank^-a; a link draws from its CDF.
        order = rng.permutation(self.articles)
        w = (np.arange(1, len(order) + 1, dtype=np.float64)) ** -ZIPF_A
        self._popular = order
        self._cdf = np.cumsum(w) / w.sum()
        self.sources = sources
        # A link whose real target is another source article points to one of that article's copies
        # (the same popularity law among them), so facts and walks keep their meaning.
        self.source_of_title = {s.title: j for j, s in enumerate(sources)}
        src_of_order = self.source[order]
        self._copies = [order[src_of_order == j] for j in range(len(sources))]

    def name(self, i: int) -> str:
        """Page ``i``'s title, a redirect's included."""
        return self.redirect_title(i) if self.is_redirect[i] else self.title(i)

    def title(self, i: int) -> str:
        src = self.sources[int(self.source[i])].title
        return f"{src} ({synthetic_name(i)})"

    def redirect_title(self, i: int) -> str:
        return synthetic_name(i)

    def copy_of(self, rng: np.random.Generator, source: int) -> int | None:
        copies = self._copies[source]
        if not len(copies):
            return None
        j = int(np.searchsorted(self._cdf, rng.random() * self._cdf[len(copies) - 1]))
        return int(copies[min(j, len(copies) - 1)])

    def link_targets(self, rng: np.random.Generator, i: int, k: int) -> np.ndarray:
        glob = self._popular[np.minimum(np.searchsorted(self._cdf, rng.random(k)), len(self._popular) - 1)]
        local_pos = np.searchsorted(self.articles, i) + rng.integers(-LOCAL_SPAN, LOCAL_SPAN + 1, k)
        local = self.articles[np.clip(local_pos, 0, len(self.articles) - 1)]
        targets = np.where(rng.random(k) < LOCAL_SHARE, local, glob)
        if len(self.redirects):  # some links go through a redirect, as on Wikipedia
            via = rng.random(k) < REDIRECT_LINK_SHARE
            targets[via] = self.redirects[rng.integers(0, len(self.redirects), int(via.sum()))]
        return targets


def _cut(src: Source, length: int) -> str:
    if len(src.text) <= length or not len(src.cuts):
        return src.text
    j = int(np.searchsorted(src.cuts, max(length, src.lead)))
    end = int(src.cuts[j]) if j < len(src.cuts) else len(src.text)
    return src.text[:end]


def _rewire(text: str, targets: Iterator[int], plan: Plan, rng: np.random.Generator) -> str:
    def sub(m: re.Match[str]) -> str:
        target = m.group(1)
        if not target.strip() or _NAMESPACED.match(target):
            return m.group()  # File:, Category:, interwiki …: unchanged
        page = next(targets)
        t = target.strip().replace("_", " ")
        src = plan.source_of_title.get(t[:1].upper() + t[1:])
        if src is not None:
            page = plan.copy_of(rng, src) or page
        new = plan.name(page)
        anchor = m.group(3)
        if anchor is None:  # [[Target]] showed the target's name: keep showing the old words
            anchor = "|" + target
        return f"[[{new}{anchor}]]"

    return _LINK.sub(sub, text)


def page_xml(plan: Plan, i: int, rng: np.random.Generator) -> str:
    page_id = i + 1
    rev = 1_000_000_000 + i
    ts = f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z"
    if plan.is_redirect[i]:
        target = plan.title(int(plan.redirect_target[i]))
        title = plan.redirect_title(i)
        text = f"#REDIRECT [[{target}]]\n\n{{{{Redirect category shell|{{{{R from alternative name}}}}}}}}"
        redirect = f"    <redirect title={quoteattr(target)} />\n"
    else:
        src = plan.sources[int(plan.source[i])]
        body = _cut(src, int(plan.length[i]))
        k = len(_LINK.findall(body))
        tg = plan.link_targets(rng, i, k) if k else np.zeros(0, np.int64)
        body = _rewire(body, iter(int(t) for t in tg), plan, rng)
        text = body.rstrip() + "\n\n" + src.categories if src.categories else body
        title = plan.title(i)
        redirect = ""
    sha = hashlib.sha1(text.encode()).hexdigest()
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>0</ns>\n    <id>{page_id}</id>\n{redirect}"
            f"    <revision>\n      <id>{rev}</id>\n      <timestamp>{ts}</timestamp>\n"
            f"      <contributor>\n        <username>ScaleBot</username>\n        <id>1</id>\n      </contributor>\n"
            f"      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
            f"      <text bytes=\"{len(text.encode())}\" xml:space=\"preserve\">{escape(text)}</text>\n"
            f"      <sha1>{sha}</sha1>\n    </revision>\n  </page>\n")


def _stream(args: tuple[int, int, int]) -> tuple[int, bytes, list[str], int]:
    """Pages ``lo..hi`` as one compressed stream (runs in a worker process)."""
    lo, hi, seed = args
    plan = _PLAN
    assert plan is not None
    parts, index = [], []
    for i in range(lo, hi):
        rng = np.random.default_rng([seed, i])
        parts.append(page_xml(plan, i, rng))
        index.append(f"{i + 1}:{plan.name(i)}")
    raw = "".join(parts).encode()
    return lo, bz2.compress(raw, 9), index, len(raw)


_PLAN: Plan | None = None


def _init_worker(pages: int, source: str, seed: int) -> None:
    global _PLAN
    _header, sources = load_sources(Path(source))
    _PLAN = Plan(pages, sources, seed)


@dataclass
class Generated:
    dump: Path
    index: Path
    pages: int
    xml_bytes: int
    seconds: float


def generate(pages: int, out: Path, *, source: Path = DEFAULT_SOURCE, seed: int = 0, workers: int = 2,
             force: bool = False) -> Generated:
    """Write the ``pages``-page multistream dump and its index under ``out`` (kept if already there)."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    dump, index = paths_for(out, pages)
    if dump.exists() and index.exists() and not force:
        return Generated(dump, index, pages, -1, 0.0)
    global _PLAN
    header, sources = load_sources(source)
    _PLAN = Plan(pages, sources, seed)  # for the streams made in this process (workers=1)
    tmp_dump, tmp_index = dump.with_suffix(".tmp"), index.with_suffix(".tmp")
    xml_bytes = 0
    with open(tmp_dump, "wb") as f, bz2.open(tmp_index, "wt", encoding="utf-8") as idx:
        f.write(bz2.compress(header, 9))
        offset = f.tell()
        jobs = [(lo, min(lo + STREAM_PAGES, pages), seed) for lo in range(0, pages, STREAM_PAGES)]
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(pages, str(source), seed)) \
            if workers > 1 else None
        try:
            for c in range(0, len(jobs), CHUNK_PAGES // STREAM_PAGES):
                chunk = jobs[c: c + CHUNK_PAGES // STREAM_PAGES]
                results = pool.map(_stream, chunk) if pool else map(_stream, chunk)
                for _lo, data, lines, raw_len in results:
                    for line in lines:
                        idx.write(f"{offset}:{line}\n")
                    f.write(data)
                    offset += len(data)
                    xml_bytes += raw_len
        finally:
            if pool:
                pool.shutdown()
        f.write(bz2.compress(b"</mediawiki>\n", 9))
    tmp_index.replace(index)
    tmp_dump.replace(dump)
    return Generated(dump, index, pages, xml_bytes + len(header), time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pages", type=int, nargs="+", required=True, help="sizes to generate, e.g. 10000 100000")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    for n in a.pages:
        g = generate(n, a.out, source=a.source, seed=a.seed, workers=a.workers, force=a.force)
        what = "kept" if g.xml_bytes < 0 else f"{g.xml_bytes / 1e6:.0f} MB XML in {g.seconds:.0f}s"
        print(f"{g.dump} ({g.dump.stat().st_size / 1e6:.1f} MB bz2, {what})", file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
