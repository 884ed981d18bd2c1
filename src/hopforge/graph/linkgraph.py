"""LinkGraph: the CSR link graph, memory-mapped, with small helpers for local questions.

Whole-graph work stays on the CSR arrays (numpy / scipy); only a local
neighbourhood is handed to networkx (an ego subgraph, simple paths), which
keeps shortcut checks cheap on a graph of millions of nodes.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from hopforge.errors import StorageError
from hopforge.storage import read_table
from hopforge.storage.arrays import latest_run, load_csr
from hopforge.text.titles import normalize_title

if TYPE_CHECKING:
    import networkx as nx


class LinkGraph:
    """Directed page -> page link graph; nodes are ints (``nodes.node``)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, titles: list[str], page_ids: np.ndarray,
                 edge_position: np.ndarray | None = None, edge_in_lead: np.ndarray | None = None,
                 redirects: dict[str, str] | None = None, meta: dict | None = None) -> None:
        self.indptr, self.indices = indptr, indices
        self.edge_position, self.edge_in_lead = edge_position, edge_in_lead
        self.titles = titles
        self.page_ids = page_ids
        self._node = {t: i for i, t in enumerate(titles)}
        self._redirects = redirects or {}
        self.meta = meta or {}
        self._rev: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def load(cls, out: str | Path, run: str | None = None) -> LinkGraph:
        """Load the latest (or given) run's graph; arrays are memory-mapped, not read."""
        if run is None and latest_run(out, "graph") is None:
            raise StorageError(f"no graph under {out}; run `hopforge ingest` first")
        csr = load_csr(out, run)
        run = csr.run
        nodes = read_table(out, "nodes", run=run, columns=["node", "title", "page_id"]).sort_by("node")
        red = read_table(out, "redirects", run=run, columns=["title", "target", "target_id"])
        redirects = {t: g for t, g, i in zip(red.column("title").to_pylist(), red.column("target").to_pylist(),
                                             red.column("target_id").to_pylist(), strict=True) if i is not None}
        return cls(csr.indptr, csr.indices, nodes.column("title").to_pylist(), nodes.column("page_id").to_numpy(),
                   csr.edge_position, csr.edge_in_lead, redirects, csr.meta)

    # -- basics
    @property
    def n_nodes(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_edges(self) -> int:
        return int(self.indptr[-1])

    def node_of(self, title: str) -> int | None:
        """Node of a title (exact, or via a redirect, or normalised as MediaWiki does)."""
        for t in (title, normalize_title(title)):
            if t in self._node:
                return self._node[t]
            if t in self._redirects:
                return self._node.get(self._redirects[t])
        return None

    def title_of(self, node: int) -> str:
        return self.titles[node]

    def neighbors(self, node: int) -> np.ndarray:
        """Out-neighbours (sorted node ids) of ``node``."""
        return np.asarray(self.indices[self.indptr[node]: self.indptr[node + 1]])

    def predecessors(self, node: int) -> np.ndarray:
        rptr, rind = self._reverse()
        return rind[rptr[node]: rptr[node + 1]]

    def has_edge(self, a: int, b: int) -> bool:
        row = self.neighbors(a)
        i = np.searchsorted(row, b)
        return bool(i < len(row) and row[i] == b)

    def edge_info(self, a: int, b: int) -> tuple[int, bool] | None:
        """(link position in the source page, in lead) of edge a->b; join links on (src page id, position)."""
        lo = int(self.indptr[a])
        row = self.neighbors(a)
        i = int(np.searchsorted(row, b))
        if i >= len(row) or row[i] != b or self.edge_position is None:
            return None
        return int(self.edge_position[lo + i]), bool(self.edge_in_lead[lo + i])

    def _reverse(self) -> tuple[np.ndarray, np.ndarray]:
        if self._rev is None:
            m = self.matrix().tocsc()
            self._rev = (m.indptr.astype(np.int64), m.indices.astype(np.int32))
        return self._rev

    def matrix(self) -> sp.csr_matrix:
        data = np.ones(self.n_edges, dtype=np.int8)
        return sp.csr_matrix((data, np.asarray(self.indices), np.asarray(self.indptr)),
                             shape=(self.n_nodes, self.n_nodes))

    # -- local neighbourhoods
    def ego(self, nodes: int | list[int], radius: int = 1, *, undirected: bool = False,
            max_nodes: int = 50_000) -> nx.DiGraph:
        """The subgraph within ``radius`` out-hops (both directions if ``undirected``) of ``nodes``.

        Node attribute ``title``; edges carry ``position`` and ``in_lead``. Stops
        growing at ``max_nodes`` so a hub never pulls in the whole graph.
        """
        seeds = [nodes] if isinstance(nodes, (int, np.integer)) else list(nodes)
        dist = {int(s): 0 for s in seeds}
        frontier = list(dist)
        for d in range(1, radius + 1):
            nxt = []
            for u in frontier:
                nbrs = self.neighbors(u)
                if undirected:
                    nbrs = np.concatenate([nbrs, self.predecessors(u)])
                for v in nbrs.tolist():
                    if v not in dist and len(dist) < max_nodes:
                        dist[v] = d
                        nxt.append(v)
            frontier = nxt
        import networkx as nx  # only for local analysis: not imported by every stage that loads the graph

        g = nx.DiGraph()
        for u in dist:
            g.add_node(u, title=self.titles[u], hops=dist[u])
        for u in dist:
            lo = int(self.indptr[u])
            for k, v in enumerate(self.neighbors(u).tolist()):
                if v in dist:
                    attrs = {}
                    if self.edge_position is not None:
                        attrs = {"position": int(self.edge_position[lo + k]),
                                 "in_lead": bool(self.edge_in_lead[lo + k])}
                    g.add_edge(u, v, **attrs)
        return g

    def shortest_path_len(self, a: int, b: int, cutoff: int | None = None) -> int | None:
        """Directed hop distance a -> b (bidirectional BFS), or None if longer than ``cutoff`` / unreachable."""
        if a == b:
            return 0
        limit = cutoff if cutoff is not None else self.n_nodes
        fwd, bwd = {a: 0}, {b: 0}
        qf, qb = deque([a]), deque([b])
        best: int | None = None
        while qf and qb:
            # Expand the smaller frontier by one full level.
            forward = len(qf) <= len(qb)
            q, seen, other = (qf, fwd, bwd) if forward else (qb, bwd, fwd)
            for _ in range(len(q)):
                u = q.popleft()
                nbrs = self.neighbors(u) if forward else self.predecessors(u)
                for v in nbrs.tolist():
                    if v in seen:
                        continue
                    seen[v] = seen[u] + 1
                    if v in other:
                        total = seen[v] + other[v]
                        best = total if best is None else min(best, total)
                    q.append(v)
            if best is not None:
                return best if best <= limit else None
            depth = max(fwd.values(), default=0) + max(bwd.values(), default=0)
            if depth >= limit:
                return None
        return None

    def alternative_paths(self, a: int, b: int, cutoff: int, limit: int = 100) -> list[list[int]]:
        """Up to ``limit`` simple directed paths a -> b of at most ``cutoff`` hops, shortest first."""
        import networkx as nx

        g = self.ego(a, cutoff)
        if b not in g:
            return []
        paths = []
        for p in nx.all_simple_paths(g, a, b, cutoff=cutoff):
            paths.append(p)
            if len(paths) >= limit * 4:
                break
        return sorted(paths, key=len)[:limit]

    # -- whole-graph statistics
    def stats(self, top: int = 10, pagerank: np.ndarray | None = None) -> dict:
        out_deg = np.diff(np.asarray(self.indptr))
        in_deg = np.bincount(np.asarray(self.indices), minlength=self.n_nodes)
        from scipy.sparse import csgraph

        m = self.matrix()
        n_weak, _ = csgraph.connected_components(m, directed=True, connection="weak")
        n_strong, labels = csgraph.connected_components(m, directed=True, connection="strong")
        largest_scc = int(np.bincount(labels).max()) if self.n_nodes else 0

        def dist(d: np.ndarray) -> dict:
            if len(d) == 0:
                return {}
            q = np.percentile(d, [50, 90, 99])
            return {"min": int(d.min()), "p50": round(float(q[0]), 2), "p90": round(float(q[1]), 2),
                    "p99": round(float(q[2]), 2),
                    "max": int(d.max()), "mean": round(float(d.mean()), 3), "zero": int((d == 0).sum())}

        res = {"nodes": self.n_nodes, "edges": self.n_edges, "out_degree": dist(out_deg), "in_degree": dist(in_deg),
               "weak_components": int(n_weak), "strong_components": int(n_strong), "largest_scc": largest_scc}
        if pagerank is not None and len(pagerank):
            order = np.argsort(-pagerank)[:top]
            res["top_pagerank"] = [{"title": self.titles[i], "pagerank": round(float(pagerank[i]), 6)} for i in order]
        return res
