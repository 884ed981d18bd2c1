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
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp

from hopforge.storage import schema_for
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


def build_graph(run: Any, alpha: float) -> dict:
    """Write ``redirects``, ``links``, ``nodes`` and the CSR arrays of one graph stage run.

    ``run`` is the :class:`~hopforge.stage.StageRun` (read its ingest tables, commit its output).
    The CSR arrays are saved first; the tables are committed as one group, which marks the step done."""
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

    # Title -> (dst id, via_redirect) for every title a link may name.
    alias = pl.DataFrame({
        "target": list(title_id) + [r["title"] for r in red_rows if r["target_id"] is not None],
        "dst_id": list(title_id.values()) + [r["target_id"] for r in red_rows if r["target_id"] is not None],
        "via_redirect": [False] * len(title_id) + [True] * sum(r["target_id"] is not None for r in red_rows),
    }, schema={"target": pl.String, "dst_id": pl.Int64, "via_redirect": pl.Boolean}).unique("target", keep="first")
    id_title = pl.DataFrame({"dst_id": pages["page_id"], "dst_title": pages["title"]})
    raw_links = pl.from_arrow(run.read("links_raw")).filter(
        pl.col("src_id").is_in(pages["page_id"].implode()))
    links = (raw_links.join(alias, on="target", how="inner").join(id_title, on="dst_id", how="left")
             .unique(["src_id", "position"], keep="first").sort(["src_id", "position"]))
    links_out = links.select([f.name for f in schema_for("links")])

    # CSR: rows are nodes ordered by page id; one edge per (src, dst), first occurrence, no self loops.
    n = pages.height
    node_of = pl.DataFrame({"page_id": pages["page_id"], "node": pl.Series(np.arange(n, dtype=np.int32))})
    edges = (links.filter(pl.col("src_id") != pl.col("dst_id"))
             .join(node_of.rename({"page_id": "src_id", "node": "src"}), on="src_id")
             .join(node_of.rename({"page_id": "dst_id", "node": "dst"}), on="dst_id")
             .sort(["src", "dst", "position"]).unique(["src", "dst"], keep="first", maintain_order=True))
    src = edges["src"].to_numpy().astype(np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, src + 1, 1)
    indptr = np.cumsum(indptr)
    indices = edges["dst"].to_numpy().astype(np.int32)
    edge_position = edges["position"].to_numpy().astype(np.int32)
    edge_in_lead = edges["in_lead"].to_numpy().astype(bool)
    out_deg = np.diff(indptr).astype(np.int32)
    in_deg = np.bincount(indices, minlength=n).astype(np.int32)
    pr = pagerank(indptr, indices, n, alpha)
    nodes = pa.table({
        "node": np.arange(n, dtype=np.int32), "page_id": pages["page_id"].to_numpy(),
        "title": pages["title"].to_list(), "pagerank": pr, "in_degree": in_deg, "out_degree": out_deg,
        "is_disambiguation": pages["is_disambiguation"].to_list(), "is_list": pages["is_list"].to_list(),
        "is_date": pages["is_date"].to_list(),
        "revision_timestamp": pages["revision_timestamp"].to_arrow(),
    })

    dump = run.read("pages", columns=["source"]).column("source")
    save_arrays(out, "graph", run.fingerprint, {"indptr": indptr, "indices": indices, "edge_position": edge_position,
                                                "edge_in_lead": edge_in_lead},
                meta={"run": run.fingerprint, "n_nodes": n, "n_edges": int(len(indices)),
                      "dump": dump[0].as_py() if len(dump) else None, "pagerank_alpha": alpha})
    run.commit({"redirects": pa.Table.from_pylist(red_rows, schema=schema_for("redirects")),
                "rejects": pa.Table.from_pylist(rejects, schema=schema_for("rejects")),
                "links": links_out.to_arrow(), "nodes": nodes}, "build_graph")
    return {"nodes": n, "edges": int(len(indices)), "links": links_out.height, "links_raw": raw_links.height,
            "redirects": len(red_rows), "redirects_resolved": sum(r["target_id"] is not None for r in red_rows),
            "redirect_cycles": len(cycles), "links_via_redirect": int(links_out["via_redirect"].sum()),
            "seconds": round(time.monotonic() - t0, 3)}
