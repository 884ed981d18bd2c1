"""The fact graph the walker walks: an edge u -> v wherever the dump states a fact relating u to v.

Built once per process from the graph stage's ``links`` table (every link row, with its
sentence): for each linked pair of pages, :func:`hopforge.synth.relations.best_relation`
reads the fact the links state. A fact stated on u's page about v gives the edge u -> v
("u was born in v"); its inverse gives v -> u ("v is the birthplace of u") unless v's own
page states a fact about u. So a walk only takes hops that can be phrased as facts, and
may take a link against its direction when the fact reads both ways (issue 15: "prefer
walk edges whose evidence sentence yields a usable relation, and re-draw hops that yield
none": an edge without a fact is never drawn).

Edges are sorted by (source, destination), CSR style, so :class:`~hopforge.synth.walks.Walker`
walks them exactly as it walks the link graph; ``in_lead`` keeps the lead-link weighting.

Scale: one pass over every link row and its sentence (seconds on a few million links). The
graph is kept in memory per process; it is not cached on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc

from hopforge.synth.describe import is_person
from hopforge.synth.relations import Relation, best_relation, inverse


@dataclass(frozen=True)
class Fact:
    """One fact edge: ``phrase`` relates its source entity to its destination."""

    phrase: str
    source: str  # infobox:<key> | sentence
    stated_on: int  # node whose page states it (the hop's source, or its destination for an inverse)
    anchor: str | None
    sentence: str | None
    in_lead: bool


@dataclass
class FactGraph:
    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 destination node per edge
    in_lead: np.ndarray  # bool per edge
    facts: list[Fact]

    @property
    def n_edges(self) -> int:
        return len(self.indices)

    def edge(self, u: int, v: int) -> int | None:
        row = self.indices[self.indptr[u]:self.indptr[u + 1]]
        j = int(np.searchsorted(row, v))
        return int(self.indptr[u]) + j if j < len(row) and row[j] == v else None


FACT_CHUNK_ROWS = 50_000  # link rows turned into Python objects at a time


def build_fact_graph(n_nodes: int, node_of_page: dict[int, int], titles: list[str], links: Any,
                     pages: dict[int, dict[str, Any]]) -> FactGraph:
    """The fact graph over ``n_nodes`` from a ``links`` table (src_id, dst_id, position, anchor,
    sentence, in_lead) and page rows by page id (for the person test of a sentence's subject)."""
    src = links.column("src_id").to_numpy(zero_copy_only=False)
    dst = links.column("dst_id").to_numpy(zero_copy_only=False)
    pos = links.column("position").to_numpy(zero_copy_only=False)
    order = np.lexsort((pos, dst, src))
    # Rows become Python dicts one chunk of (src, dst) groups at a time: a dict per link for the
    # whole dump costs ~1 KB each (hundreds of GB on enwiki), the Arrow columns ~10x less.
    if len(order):
        s_sorted, d_sorted = src[order], dst[order]
        starts = np.flatnonzero(np.r_[True, (s_sorted[1:] != s_sorted[:-1]) | (d_sorted[1:] != d_sorted[:-1])])
    else:
        starts = np.zeros(0, np.int64)
    bounds = np.r_[starts, len(order)]
    forward: dict[tuple[int, int], tuple[Relation, bool]] = {}
    person: dict[int, bool] = {}  # per source page: is_person ran once per link group (4M calls at 100k pages)
    g = 0
    while g < len(starts):
        g_end = int(np.searchsorted(bounds, bounds[g] + FACT_CHUNK_ROWS, side="right")) - 1
        g_end = min(max(g_end, g + 1), len(starts))  # whole groups, at least one
        lo, hi = int(bounds[g]), int(bounds[g_end])
        rows = links.take(order[lo:hi]).to_pylist()
        for a, b in zip(bounds[g:g_end] - lo, bounds[g + 1:g_end + 1] - lo, strict=True):
            group = rows[a:b]
            key = (group[0]["src_id"], group[0]["dst_id"])
            u, v = node_of_page.get(key[0]), node_of_page.get(key[1])
            if u is not None and v is not None and u != v:
                if key[0] not in person:
                    person[key[0]] = is_person(pages.get(key[0]) or {})
                rel = best_relation(group, titles[u], person[key[0]])
                if rel is not None:
                    lead = any(r.get("in_lead") for r in group if r["position"] == rel.position)
                    forward[(u, v)] = (rel, bool(lead))
        g = g_end
    edges: dict[tuple[int, int], Fact] = {}
    for (u, v), (rel, lead) in forward.items():
        edges[(u, v)] = Fact(rel.phrase, rel.source, u, rel.anchor, rel.sentence, lead)
    for (u, v), (rel, lead) in forward.items():
        inv = inverse(rel.phrase)
        if inv is not None and (v, u) not in edges:
            edges[(v, u)] = Fact(inv, rel.source, u, rel.anchor, rel.sentence, lead)
    keys = sorted(edges)
    indptr = np.zeros(n_nodes + 1, np.int64)
    if keys:
        np.cumsum(np.bincount(np.asarray([k[0] for k in keys]), minlength=n_nodes), out=indptr[1:])
    return FactGraph(indptr=indptr, indices=np.asarray([k[1] for k in keys], np.int32),
                     in_lead=np.asarray([edges[k].in_lead for k in keys], bool), facts=[edges[k] for k in keys])


def links_for_facts(dataset: Any) -> Any:
    """The ``links`` columns :func:`build_fact_graph` reads (every row whose target is in the dump)."""
    t = dataset.to_table(columns=["src_id", "dst_id", "position", "anchor", "sentence", "in_lead"])
    return t.filter(pc.is_valid(t.column("dst_id")))
