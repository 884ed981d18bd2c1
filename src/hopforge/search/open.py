"""Open the search index of a graph run with the backend ``[search]`` asks for (docs/search.md).

``backend = "auto"`` picks bm25s below ``auto_tantivy_passages`` passages and tantivy from there up.
The passages are estimated without reading a page: the uncompressed size of the pages' ``text``
column in the Parquet footers over ``BYTES_PER_PASSAGE`` (enwiki-233: 17.7 MB of text, 32,841
passages). On enwiki-233 both backends answer in ~0.2 ms; bm25s holds every page's text and its
score matrix in RAM and loads them on every open, and its query time grows with the corpus (14 ms
at 1M passages against tantivy's 0.5 ms; benchmarks/results/search_scale.md).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hopforge.errors import StorageError
from hopforge.search.base import SearchBackend, SearchSettings
from hopforge.search.index import SearchIndex, cache_key
from hopforge.search.tantivy_index import FORMAT_VERSION, open_or_build
from hopforge.storage import read_table
from hopforge.storage.arrays import latest_run
from hopforge.storage.shards import shard_paths
from hopforge.text.titles import normalize_title

log = logging.getLogger(__name__)

_CHUNK = 8192  # pages per read when streaming pages in page-id order


BYTES_PER_PASSAGE = 540


def choose_backend(search: SearchSettings, passages: int) -> str:
    """The backend for a dump of about ``passages`` passages."""
    if search.backend != "auto":
        return search.backend
    return "tantivy" if passages >= search.auto_tantivy_passages else "bm25s"


def estimate_passages(out: str | Path, run: str) -> int:
    """About how many passages graph run ``run`` has, from the pages' Parquet footers alone."""
    total = 0
    for path in shard_paths(out, "pages", run):
        md = pq.ParquetFile(path).metadata
        col = [md.schema.column(i).name for i in range(md.num_columns)].index("text")
        total += sum(md.row_group(r).column(col).total_uncompressed_size for r in range(md.num_row_groups))
    return total // BYTES_PER_PASSAGE


def tantivy_dir(out: str | Path, run: str, search: SearchSettings) -> Path:
    h = hashlib.sha256(f"{cache_key(out, run)}|tantivy{FORMAT_VERSION}|{search.shard_passages}".encode())
    return Path(out) / "_cache" / f"tantivy-{h.hexdigest()[:16]}"


def iter_pages(out: str | Path, run: str) -> Iterator[tuple[int, str, str]]:
    """(page_id, title, text) of graph run ``run`` in page-id order, streamed: only the page ids and
    the shard files holding the current chunk of pages are in memory at a time."""
    paths = shard_paths(out, "pages", run)
    ids = [pq.read_table(p, columns=["page_id"]).column("page_id") for p in paths]
    sizes = [len(c) for c in ids]
    if not sizes:
        return
    all_ids = pa.chunked_array([c.combine_chunks() for c in ids]).combine_chunks()
    order = pc.sort_indices(all_ids).to_numpy()
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + n)
    file_of = np.searchsorted(np.asarray(starts[1:]), order, side="right")
    tables: dict[int, pa.Table] = {}
    for lo in range(0, len(order), _CHUNK):
        pos, files = order[lo:lo + _CHUNK], file_of[lo:lo + _CHUNK]
        needed = dict.fromkeys(files.tolist())
        for f in [f for f in tables if f not in needed]:
            del tables[f]
        for f in needed:
            if f not in tables:
                tables[f] = pq.read_table(paths[f], columns=["page_id", "title", "text"])
        for p, f in zip(pos.tolist(), files.tolist(), strict=True):
            row = tables[f].slice(p - starts[f], 1)
            yield int(row.column(0)[0].as_py()), row.column(1)[0].as_py(), row.column(2)[0].as_py() or ""


def iter_redirects(out: str | Path, run: str) -> Iterator[tuple[str, str]]:
    red = read_table(out, "redirects", run=run, columns=["title", "target"])
    for k, v in zip(red.column("title").to_pylist(), red.column("target").to_pylist(), strict=True):
        if v:
            yield normalize_title(k), v


def open_index(out: str | Path, run: str | None = None, search: SearchSettings | None = None, *,
               cache: bool = True) -> SearchBackend:
    """The search index over graph run ``run`` (default: the latest complete graph), from its cache
    under ``OUT/_cache`` or built there. A cache that is corrupt is logged and rebuilt. ``search`` is
    the ``[search]`` section (``None``: bm25s with exact ranks, as before the section existed)."""
    run = run or latest_run(out, "graph")
    n_pages = read_table(out, "pages", run=run, columns=[]).num_rows if run else 0
    if not n_pages:
        raise StorageError(f"no pages under {Path(out) / 'pages'} (graph run {run}): run `hopforge ingest` first")
    assert run is not None
    if search is None:  # no [search] given: bm25s, exact ranks
        return SearchIndex.from_tables(out, run, cache=cache)
    backend = choose_backend(search, estimate_passages(out, run))
    if backend == "bm25s":
        return SearchIndex.from_tables(out, run, cache=cache, rank_depth=search.rank_depth)
    path = tantivy_dir(out, run, search)
    if not cache:  # a private index, removed when the process exits
        tmp = Path(tempfile.mkdtemp(prefix="hopforge-tantivy-"))
        atexit.register(shutil.rmtree, tmp, True)
        path = tmp / "index"
    return open_or_build(path, lambda: iter_pages(out, run), lambda: iter_redirects(out, run),
                         expect_pages=n_pages, shard_passages=search.shard_passages,
                         rank_depth=search.rank_depth, settings={"graph_run": run})
