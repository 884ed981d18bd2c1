"""Streaming a graph's pages in page-id order for an index build, across many page shards."""

from __future__ import annotations

from hopforge.config import load_config
from hopforge.graph import run_ingest
from hopforge.search import open as search_open
from hopforge.storage import read_table
from hopforge.storage.arrays import latest_run


def test_pages_stream_in_id_order_when_one_chunk_spans_many_shards(scale_dump, tmp_path, monkeypatch):
    """A chunk of pages that lies in more than two shard files (the generated dump, 10 batches)
    once lost a file it still needed (KeyError): every page comes out, once, in id order."""
    cfg = load_config(None, {"run.out": str(tmp_path / "out"), "graph.dump": str(scale_dump),
                             "graph.workers": 2, "graph.batch_pages": 300})
    run_ingest(cfg)
    run = latest_run(cfg.run.out, "graph")
    monkeypatch.setattr(search_open, "_CHUNK", 1000)
    got = list(search_open.iter_pages(cfg.run.out, run))
    pages = read_table(cfg.run.out, "pages", run=run, columns=["page_id", "title", "text"]).sort_by("page_id")
    assert [g[0] for g in got] == pages.column("page_id").to_pylist()
    assert [g[1] for g in got] == pages.column("title").to_pylist()
    assert [g[2] for g in got] == [t or "" for t in pages.column("text").to_pylist()]
