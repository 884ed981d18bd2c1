"""Streaming a graph's pages in page-id order for an index build, across many page shards."""

from __future__ import annotations

from hopforge.search import open as search_open
from hopforge.storage import read_table
from hopforge.storage.arrays import latest_run


def test_pages_stream_in_id_order_when_one_chunk_spans_many_shards(scale_single, monkeypatch):
    """A chunk of pages that lies in more than two shard files (the generated dump, 8 page shards)
    once lost a file it still needed (KeyError): every page comes out, once, in id order."""
    run = latest_run(scale_single, "graph")
    monkeypatch.setattr(search_open, "_CHUNK", 1000)
    got = list(search_open.iter_pages(scale_single, run))
    pages = read_table(scale_single, "pages", run=run, columns=["page_id", "title", "text"]).sort_by("page_id")
    assert [g[0] for g in got] == pages.column("page_id").to_pylist()
    assert [g[1] for g in got] == pages.column("title").to_pylist()
    assert [g[2] for g in got] == [t or "" for t in pages.column("text").to_pylist()]
