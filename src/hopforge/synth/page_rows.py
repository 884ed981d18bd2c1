"""Every page row of a graph run (no text), memory-mapped, by page id.

The question stage reads a page's short description, infobox, categories and lead for each entity
of a chain, and every page once to build the clue index. Held as Python dicts these rows cost
~27 KB per page (1.8 GB at 100k pages, ~190 GB at enwiki), so they are kept as one Arrow IPC file
under ``OUT/_cache/pages-<key>/`` (:mod:`hopforge.synth.cache`), written once per graph run a
shard at a time, and memory-mapped by every process: a row becomes a dict only when asked for.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hopforge.storage import schema_for, shard_paths
from hopforge.synth import cache
from hopforge.synth.graph_view import PAGE_COLUMNS

CACHE_FORMAT = 1
_CHUNK = 8192


class PageRows(Mapping[int, dict[str, Any]]):
    """Page rows by page id over a (memory-mapped) Arrow table and its page-id order. Each look-up
    makes a new dict."""

    def __init__(self, table: pa.Table, sorted_ids: np.ndarray, rows: np.ndarray) -> None:
        self.table = table
        self._ids = sorted_ids  # int64, ascending
        self._rows = rows  # the row of each sorted id

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator[int]:
        return (int(p) for p in self._ids)

    def __getitem__(self, page_id: int) -> dict[str, Any]:
        j = int(np.searchsorted(self._ids, page_id))
        if j == len(self._ids) or self._ids[j] != page_id:
            raise KeyError(page_id)
        return self.table.slice(int(self._rows[j]), 1).to_pylist()[0]

    def chunks(self, size: int = _CHUNK) -> Iterator[list[dict[str, Any]]]:
        """Every row, as dicts, ``size`` at a time (table order)."""
        for lo in range(0, self.table.num_rows, size):
            yield self.table.slice(lo, size).to_pylist()


def _schema() -> pa.Schema:
    full = schema_for("pages")
    return pa.schema([full.field(c) for c in PAGE_COLUMNS])


def pages_cache_dir(out: str | Path, graph_run: str) -> Path:
    return cache.cache_dir(out, graph_run, "pages", ("pages",), (sys.modules[__name__],), CACHE_FORMAT)


def _save(paths: list[Path], path: Path) -> None:
    ids: list[np.ndarray] = []

    def tables() -> Iterator[pa.Table]:
        for p in paths:  # one shard in memory at a time
            t = pq.read_table(p, columns=PAGE_COLUMNS, schema=schema_for("pages")).cast(_schema())
            ids.append(t.column("page_id").to_numpy(zero_copy_only=False).astype(np.int64))
            yield t

    def arrays() -> dict[str, np.ndarray]:  # after the tables: their ids are known
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.argsort(all_ids, kind="stable")
        return {"sorted_ids": all_ids[order], "rows": order.astype(np.int64)}

    cache.write_atomically(path, arrays, {"pages": (_schema(), tables())}, lambda: {
        "format": CACHE_FORMAT, "rows": int(sum(len(i) for i in ids))})


def _load(path: Path) -> PageRows:
    meta, arrays, tables = cache.read_dir(path, ("sorted_ids", "rows"), ("pages",))
    table, n = tables["pages"], meta.get("rows")
    problems = []
    if meta.get("format") != CACHE_FORMAT:
        problems.append(f"meta.json says {meta}, expected format {CACHE_FORMAT}")
    for name, arr in (("pages.arrow", table), ("sorted_ids.npy", arrays["sorted_ids"]), ("rows.npy", arrays["rows"])):
        if len(arr) != n:
            problems.append(f"{name} has {len(arr)} rows, expected {n}")
    if table.schema != _schema():
        problems.append(f"pages.arrow has schema {table.schema}, expected {_schema()}")
    cache.inconsistent(path, problems)
    return PageRows(table, arrays["sorted_ids"], arrays["rows"])


def page_rows(out: str | Path, graph_run: str) -> PageRows:
    """The page rows of graph run ``graph_run``, from their cache (written first if missing)."""
    paths = shard_paths(out, "pages", graph_run)
    return cache.cached(pages_cache_dir(out, graph_run), _load, lambda: paths, _save)
