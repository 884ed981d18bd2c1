"""build_graph: resolve redirects and links over the whole dump, write links / nodes / CSR arrays.

Runs after every ingest batch is recorded, because only then is the full title
set known. Redirect chains are followed to their end (cycles detected and
rejected); a link to a redirect points at its final target with
``via_redirect = true``; links whose target is not in the dump are dropped
(they were counted per page as ``pages.red_links`` during ingest).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from hopforge.errors import StorageError
from hopforge.storage import iter_batches, schema_for, shard_paths
from hopforge.storage.arrays import save_arrays

log = logging.getLogger(__name__)

MAX_CHAIN = 32  # MediaWiki itself follows one hop; dumps contain long chains only by mistake


def resolve_redirects(redirects: dict[str, str], titles: dict[str, int]
                      ) -> tuple[dict[str, tuple[str, list[str], bool]], list[list[str]]]:
    """Follow every redirect to its end.

    Returns ({redirect title: (final title, intermediate titles, ok)}, cycles).
    ``ok`` is False for a cycle or an over-long chain (final title is then the last one reached).
    """
    resolved: dict[str, tuple[str, list[str], bool]] = {}
    cycles: list[list[str]] = []
    for start in redirects:
        chain: list[str] = []
        seen = {start}
        cur = redirects[start]
        ok = True
        while cur in redirects and cur not in titles:
            if cur in seen or len(chain) >= MAX_CHAIN:
                ok = False
                cycles.append([start, *chain, cur])
                break
            seen.add(cur)
            chain.append(cur)
            cur = redirects[cur]
        resolved[start] = (cur, chain, ok)
    return resolved, cycles


def pagerank(indptr: np.ndarray, indices: np.ndarray, n: int, alpha: float, tol: float = 1e-10,
             max_iter: int = 200) -> np.ndarray:
    """PageRank by power iteration on the sparse link matrix; dangling mass spread uniformly."""
    if n == 0:
        return np.zeros(0)
    data = np.ones(len(indices), dtype=np.float64)
    a = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    out_deg = np.asarray(a.sum(axis=1)).ravel()
    inv = np.divide(1.0, out_deg, out=np.zeros_like(out_deg), where=out_deg > 0)
    m = (sp.diags(inv) @ a).T.tocsr()  # column-stochastic transpose
    dangling = out_deg == 0
    r = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        nxt = alpha * (m @ r + r[dangling].sum() / n) + (1 - alpha) / n
        if np.abs(nxt - r).sum() < tol:
            r = nxt
            break
        r = nxt
    return r / r.sum()


# links_raw rows resolved per chunk; each chunk becomes one shard of `links`. Peak memory holds one
# chunk's strings (~0.3 kB a row on Wikipedia: sentence, anchor, titles), whatever the dump's size.
LINK_CHUNK_ROWS = 100_000
_RAW_COLUMNS = ["src_id", "src_title", "target", "raw_target", "anchor", "sentence", "position", "in_lead"]


def build_graph(run: Any, alpha: float) -> dict:
    """Write ``redirects``, ``links``, ``nodes`` and the CSR arrays of one graph stage run.

    ``run`` is the :class:`~hopforge.stage.StageRun` (read its ingest tables, commit its output).
    Memory is bounded by the title set plus a few integers per link, never the links' text:
    ``links_raw`` is streamed in chunks of :data:`LINK_CHUNK_ROWS` rows, each resolved against the
    title -> (dst id, via_redirect) map and written as one hidden ``links`` shard at once; only the
    chunk's deduplicated edges (src node, dst node, position, in_lead: 13 bytes each) are kept for
    the CSR. The CSR arrays are saved first; all tables (every ``links`` shard, ``redirects``,
    ``rejects``, ``nodes``) are committed as one group, which marks the step done."""
    t0 = time.monotonic()
    out = run.out
    pages = pl.from_arrow(run.read("pages", columns=[
        "page_id", "title", "is_disambiguation", "is_list", "is_date", "revision_timestamp", "revision_id"]))
    # Duplicate titles (the same page listed twice) keep the latest revision.
    pages = (pages.sort(["revision_id", "page_id"], nulls_last=False).unique("title", keep="last")
             .unique("page_id", keep="last").sort("page_id"))
    title_id = dict(zip(pages["title"].to_list(), pages["page_id"].to_list(), strict=True))

    raw_red = pl.from_arrow(run.read("redirects_raw")).unique("title", keep="last")
    direct = dict(zip(raw_red["title"].to_list(), raw_red["target"].to_list(), strict=True))
    resolved, cycles = resolve_redirects(direct, title_id)
    red_rows = []
    for title, pid, frag in zip(raw_red["title"].to_list(), raw_red["page_id"].to_list(),
                                raw_red["fragment"].to_list(), strict=True):
        final, chain, ok = resolved[title]
        red_rows.append({"title": title, "page_id": pid, "target": final,
                         "target_id": title_id.get(final) if ok else None, "fragment": frag, "chain": chain})
    rejects = [{"stage": "ingest", "step": "resolve_redirects", "reason": "redirect_cycle", "row_table": "redirects",
                "row_id": c[0], "detail": " -> ".join(c)} for c in cycles]
    del raw_red, direct, resolved

    # Title -> (dst id, via_redirect) for every title a link may name: O(titles), built once.
    alias = pl.DataFrame({
        "target": list(title_id) + [r["title"] for r in red_rows if r["target_id"] is not None],
        "dst_id": list(title_id.values()) + [r["target_id"] for r in red_rows if r["target_id"] is not None],
        "via_redirect": [False] * len(title_id) + [True] * sum(r["target_id"] is not None for r in red_rows),
    }, schema={"target": pl.String, "dst_id": pl.Int64, "via_redirect": pl.Boolean}).unique("target", keep="first")
    del title_id
    page_ids = pages["page_id"].to_numpy()  # sorted and unique: a page's node is its index here
    n = pages.height

    with run.group("build_graph") as group:
        edges = _EdgeBuffer()
        n_raw = n_links = n_via = 0
        risky = _repeated_sources(run)
        seen = pl.DataFrame(schema={"src_id": pl.Int64, "position": pl.Int32})
        titles = pa.array(pages["title"].to_list(), pa.string())
        in_dump = pl.col("src_id").is_in(pl.Series(page_ids).implode())
        for chunk in iter_link_chunks(run):
            # Resolve on the key columns with each row's index, then gather the text columns once.
            keys = (pl.from_arrow(chunk.select(["src_id", "target", "position", "in_lead"]))
                    .with_row_index("row").filter(in_dump))
            n_raw += keys.height
            keys = (keys.join(alias, on="target", how="inner", maintain_order="left").drop("target")
                    .unique(["src_id", "position"], keep="first", maintain_order=True))
            if len(risky):
                # A page listed in two batches (or twice in one) has its links in two chunks: the
                # first chunk's (src_id, position) wins, as in one pass over the whole table.
                again = keys.filter(pl.col("src_id").is_in(pl.Series(risky).implode())).select("src_id", "position")
                keys = keys.join(seen, on=["src_id", "position"], how="anti", maintain_order="left")
                seen = pl.concat([seen, again]).unique()
            keys = keys.sort(["src_id", "position"])
            n_links += keys.height
            n_via += int(keys["via_redirect"].sum())
            dst_node = np.searchsorted(page_ids, keys["dst_id"].to_numpy())
            rows = pa.array(keys["row"].to_numpy())
            group.add("links", pa.table({
                "src_id": keys["src_id"].to_arrow(), "src_title": chunk.column("src_title").take(rows),
                "dst_id": keys["dst_id"].to_arrow(), "dst_title": titles.take(pa.array(dst_node)),
                "raw_target": chunk.column("raw_target").take(rows), "anchor": chunk.column("anchor").take(rows),
                "sentence": chunk.column("sentence").take(rows), "position": keys["position"].to_arrow(),
                "in_lead": keys["in_lead"].to_arrow(), "via_redirect": keys["via_redirect"].to_arrow()}))
            edges.add(keys, page_ids)
            del keys, chunk, rows
        del alias, seen, titles

        # CSR: rows are nodes ordered by page id; one edge per (src, dst), first occurrence, no self loops.
        indptr, indices, edge_position, edge_in_lead = edges.csr(n)
        out_deg = np.diff(indptr).astype(np.int32)
        in_deg = np.bincount(indices, minlength=n).astype(np.int32)
        pr = pagerank(indptr, indices, n, alpha)
        nodes = pa.table({
            "node": np.arange(n, dtype=np.int32), "page_id": page_ids,
            "title": pages["title"].to_list(), "pagerank": pr, "in_degree": in_deg, "out_degree": out_deg,
            "is_disambiguation": pages["is_disambiguation"].to_list(), "is_list": pages["is_list"].to_list(),
            "is_date": pages["is_date"].to_list(),
            "revision_timestamp": pages["revision_timestamp"].to_arrow(),
        })

        dump = run.read("pages", columns=["source"]).column("source")
        save_arrays(out, "graph", run.fingerprint, {"indptr": indptr, "indices": indices,
                                                    "edge_position": edge_position, "edge_in_lead": edge_in_lead},
                    meta={"run": run.fingerprint, "n_nodes": n, "n_edges": int(len(indices)),
                          "dump": dump[0].as_py() if len(dump) else None, "pagerank_alpha": alpha})
        group.add("redirects", pa.Table.from_pylist(red_rows, schema=schema_for("redirects")))
        group.add("rejects", pa.Table.from_pylist(rejects, schema=schema_for("rejects")))
        group.add("nodes", nodes)
    return {"nodes": n, "edges": int(len(indices)), "links": n_links, "links_raw": n_raw,
            "redirects": len(red_rows), "redirects_resolved": sum(r["target_id"] is not None for r in red_rows),
            "redirect_cycles": len(cycles), "links_via_redirect": n_via,
            "seconds": round(time.monotonic() - t0, 3)}


def iter_link_chunks(run: Any, rows: int | None = None) -> Iterator[pa.Table]:
    """``links_raw`` of ``run`` in table order, in chunks of ``rows`` (default :data:`LINK_CHUNK_ROWS`);
    a chunk spans shards (an ingest batch's shard is usually much smaller), only the last is shorter."""
    rows = rows or LINK_CHUNK_ROWS
    buf: list[pa.RecordBatch] = []
    have = 0
    for b in iter_batches(run.out, "links_raw", rows, run=run.partition("graph"), columns=_RAW_COLUMNS):
        buf.append(b)
        have += b.num_rows
        while have >= rows:
            t = pa.Table.from_batches(buf)
            yield t.slice(0, rows)
            rest = t.slice(rows)
            buf, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(buf)


def _repeated_sources(run: Any) -> np.ndarray:
    """Page ids whose links may repeat a (src_id, position) key in two chunks: those in more than one
    ``links_raw`` shard, or with a repeated key inside one (a page listed twice). Normally none.

    Reads two integer columns, one shard at a time; holds one page id per (shard, page)."""
    per_shard, repeated = [], []
    for path in shard_paths(run.out, "links_raw", run.partition("graph")):
        try:
            t = pl.from_arrow(pq.ParquetFile(path, page_checksum_verification=True).read(columns=["src_id", "position"]))
        except (pa.ArrowException, OSError, ValueError) as e:
            raise StorageError(f"cannot read {path}: {e}") from None
        per_shard.append(t["src_id"].unique().to_numpy())
        dup = t.filter(t.select("src_id", "position").is_duplicated())
        repeated.append(dup["src_id"].unique().to_numpy())
    if not per_shard:
        return np.zeros(0, dtype=np.int64)
    ids, counts = np.unique(np.concatenate(per_shard), return_counts=True)
    return np.union1d(ids[counts > 1], np.concatenate(repeated)).astype(np.int64)


class _EdgeBuffer:
    """The CSR's edges, gathered chunk by chunk as int32 columns (src node, dst node, position) and
    in_lead: 13 bytes an edge, one edge per (src, dst) per chunk."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, links: pl.DataFrame, page_ids: np.ndarray) -> None:
        e = (links.select("src_id", "dst_id", "position", "in_lead").filter(pl.col("src_id") != pl.col("dst_id"))
             .sort(["src_id", "dst_id", "position"]).unique(["src_id", "dst_id"], keep="first", maintain_order=True))
        if not e.height:
            return
        self.parts.append((np.searchsorted(page_ids, e["src_id"].to_numpy()).astype(np.int32),
                           np.searchsorted(page_ids, e["dst_id"].to_numpy()).astype(np.int32),
                           e["position"].to_numpy().astype(np.int32), e["in_lead"].to_numpy().astype(bool)))

    def csr(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, indices, edge_position, edge_in_lead), sorted by (src, dst), the first position kept."""
        cols = [np.concatenate([p[i] for p in self.parts]) if self.parts else np.zeros(0, t)
                for i, t in enumerate((np.int32, np.int32, np.int32, bool))]
        chunks, self.parts = len(self.parts), []
        src, dst, pos, lead = cols
        if chunks > 1:  # edges of one (src, dst) may sit in several chunks
            order = np.lexsort((pos, dst, src))
            src, dst, pos, lead = src[order], dst[order], pos[order], lead[order]
            del order
            first = np.ones(len(src), dtype=bool)
            first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
            src, dst, pos, lead = src[first], dst[first], pos[first], lead[first]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
        return indptr, dst, pos, lead
