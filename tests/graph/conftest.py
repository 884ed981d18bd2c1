"""Shared fixtures: the real dumps in ../shared/wiki and one ingest of each, reused by every test."""

from __future__ import annotations

import bz2
import html
import re
from pathlib import Path

import pytest

from hopforge.config import Config, load_config

WIKI = Path(__file__).parents[2] / ".." / "shared" / "wiki"


def wiki_file(name: str) -> Path:
    path = WIKI / name
    if not path.exists():
        pytest.skip(f"shared dump {path} is absent (tests read the real dumps from ../shared/wiki/)")
    return path


def make_cfg(out: Path, dump: str | Path, **overrides) -> Config:
    return load_config(None, {"run.out": str(out), "graph.dump": str(dump), **overrides})


def write_dump(path: Path, pages_xml: str, *, compress: bool = False) -> Path:
    """A small export-0.11 dump around hand-written <page> elements (no Wikipedia text)."""
    doc = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">\n'
           "<siteinfo><sitename>Test</sitename><dbname>testwiki</dbname><case>first-letter</case>"
           '<namespaces><namespace key="0" case="first-letter" />'
           '<namespace key="6" case="first-letter">File</namespace>'
           '<namespace key="14" case="first-letter">Category</namespace></namespaces></siteinfo>\n'
           f"{pages_xml}</mediawiki>\n").encode()
    path.write_bytes(bz2.compress(doc) if compress else doc)
    return path


def page_xml(page_id: int, title: str, text: str, *, redirect: str | None = None) -> str:
    from xml.sax.saxutils import escape, quoteattr

    red = f"<redirect title={quoteattr(redirect)} />" if redirect else ""
    return (f"<page><title>{escape(title)}</title><ns>0</ns><id>{page_id}</id>{red}"
            f"<revision><id>{page_id * 10}</id><timestamp>2024-01-0{page_id % 9 + 1}T00:00:00Z</timestamp>"
            f'<text xml:space="preserve">{escape(text)}</text></revision></page>\n')


def cut_bz2(src: Path, dest: Path, fraction: float) -> tuple[Path, int, list[str]]:
    """``src`` recompressed with 100 kB bz2 blocks and cut after ``fraction`` of its bytes.

    Returns (the cut dump, its length in bytes, the titles of the pages that survive whole,
    in dump order), the last one being the break's "last complete page". The titles come from
    what Python's own bz2 decompressor recovers, not from hopforge's reader."""
    data = bz2.compress(bz2.decompress(src.read_bytes()), compresslevel=1)
    cut = data[: int(len(data) * fraction)]
    dest.write_bytes(cut)
    recovered = bz2.BZ2Decompressor().decompress(cut)
    pages = re.findall(rb"<page>.*?</page>", recovered, re.S)
    titles = [html.unescape(re.search(rb"<title>(.*?)</title>", p).group(1).decode()) for p in pages]
    return dest, len(cut), titles


@pytest.fixture(scope="session")
def enwiki233(tmp_path_factory) -> Config:
    """enwiki-233 ingested once with 2 workers (the expensive fixture: ~1 min on 2 cores)."""
    from hopforge.graph import run_ingest

    dump = wiki_file("enwiki-233.xml.bz2")
    cfg = make_cfg(tmp_path_factory.mktemp("enwiki233"), dump, **{"graph.workers": 2, "graph.batch_pages": 40})
    cfg._stats = run_ingest(cfg)  # type: ignore[attr-defined]
    return cfg


@pytest.fixture(scope="session")
def tiny70(tmp_path_factory) -> Config:
    from hopforge.graph import run_ingest

    dump = wiki_file("enwiki-tiny-70.xml.bz2")
    cfg = make_cfg(tmp_path_factory.mktemp("tiny70"), dump, **{"graph.workers": 1, "graph.batch_pages": 16})
    cfg._stats = run_ingest(cfg)  # type: ignore[attr-defined]
    return cfg
