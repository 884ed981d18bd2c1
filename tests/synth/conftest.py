"""Fixtures: small hand-built graphs written through hopforge.storage exactly as the graph stage writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pyarrow as pa
import pytest

from hopforge.config import Config, load_config
from hopforge.storage import schema_for
from hopforge.testing.stages import complete_stage

TOY_DUMP = "toy.xml"  # no such file: the graph stage run is recorded by complete_stage, never ingested


def toy_config(out: Path | str, **overrides: Any) -> Config:
    """A config whose graph stage resolves to the toy graph recorded under ``out``. The toy has ten
    pages, so a clue need fit only one page (``synth.min_clue_pages = 1``) unless a test says otherwise."""
    return load_config(None, {"run.out": str(out), "graph.dump": TOY_DUMP, "synth.min_clue_pages": 1, **overrides})


def build_graph(out: Path, pages: list[dict[str, Any]], links: list[tuple[str, str, str, str, bool]],
                redirects: list[tuple[str, str]] = ()) -> None:
    """Record pages/links/redirects/nodes and the CSR arrays of a toy graph as a complete graph stage run.

    ``links`` are (src title, dst title, anchor, sentence, in_lead); positions are
    assigned in order per source page. Node order = page order.
    """
    ids = {p["title"]: 100 + i for i, p in enumerate(pages)}
    page_rows = []
    for p in pages:
        # Text for the search index: the page's own lead, then the prose of its links (infobox lines
        # are not text, as in a real ingest).
        prose = [sentence for src, _, _, sentence, _ in links if src == p["title"] and ": " not in sentence[:30]]
        text = p.get("text") or " ".join([f"{p['title']} is a {(p.get('short_description') or 'page').lower()}.",
                                           *prose])
        page_rows.append({
            "page_id": ids[p["title"]], "title": p["title"], "ns": 0, "revision_id": 1,
            "revision_timestamp": p.get("ts", datetime(2021, 1, 1, tzinfo=UTC)), "text": text,
            "lead": p.get("lead", ""), "short_description": p.get("short_description"),
            "infobox_type": p.get("infobox_type"),
            "infobox": [{"key": k, "value": v} for k, v in p.get("infobox", {}).items()],
            "categories": p.get("categories", []), "is_disambiguation": p.get("is_disambiguation", False),
            "is_list": p.get("is_list", False), "is_date": p.get("is_date", False), "wikitext_bytes": 100,
            "red_links": 0, "source": "toy.xml",
        })
    link_rows, pos = [], {}
    for src, dst, anchor, sentence, lead in links:
        n = pos.get(src, 0)
        pos[src] = n + 1
        link_rows.append({"src_id": ids[src], "src_title": src, "dst_id": ids[dst], "dst_title": dst,
                          "raw_target": dst, "anchor": anchor, "sentence": sentence, "position": n,
                          "in_lead": lead, "via_redirect": False})
    node = {p["title"]: i for i, p in enumerate(pages)}
    edges: dict[tuple[int, int], tuple[int, bool]] = {}
    for r in link_rows:
        key = (node[r["src_title"]], node[r["dst_title"]])
        if key[0] != key[1] and key not in edges:
            edges[key] = (r["position"], r["in_lead"])
    n = len(pages)
    order = sorted(edges)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount([s for s, _ in order], minlength=n), out=indptr[1:])
    g = nx.DiGraph(order)
    g.add_nodes_from(range(n))
    pr = nx.pagerank(g)
    indeg = np.bincount([d for _, d in order], minlength=n)
    node_rows = [{"node": node[p["title"]], "page_id": ids[p["title"]], "title": p["title"],
                  "pagerank": pr[node[p["title"]]], "in_degree": int(indeg[node[p["title"]]]),
                  "out_degree": int(indptr[node[p["title"]] + 1] - indptr[node[p["title"]]]),
                  "is_disambiguation": p.get("is_disambiguation", False), "is_list": p.get("is_list", False),
                  "is_date": p.get("is_date", False), "revision_timestamp": r["revision_timestamp"]}
                 for p, r in zip(pages, page_rows, strict=True)]
    red_rows = [{"title": t, "page_id": 900 + i, "target": tgt, "target_id": ids[tgt], "fragment": None, "chain": []}
                for i, (t, tgt) in enumerate(redirects)]
    tables = {table: pa.Table.from_pylist(rows, schema=schema_for(table))
              for table, rows in (("pages", page_rows), ("links", link_rows), ("nodes", node_rows),
                                  ("redirects", red_rows))}
    complete_stage(toy_config(out), "graph", tables, arrays={
        "indptr": indptr,
        "indices": np.array([d for _, d in order], np.int32),
        "edge_position": np.array([edges[k][0] for k in order], np.int32),
        "edge_in_lead": np.array([edges[k][1] for k in order], bool),
    })


# A fictional world (no Wikipedia text): a chain Aldmoor -> Brannock Abbey -> Cedric Vane -> Duskwater Press,
# plus side pages so walks have choices and the checks have something to find.
TOY_PAGES = [
    {"title": "Aldmoor", "short_description": "Market town in Westshire", "infobox_type": "settlement",
     "infobox": {"established": "1712"}, "categories": ["Market towns in Westshire"]},
    {"title": "Brannock Abbey", "short_description": "Ruined monastery near the river Ell",
     "infobox_type": "religious building", "infobox": {"founded": "c. 1140"}},
    {"title": "Cedric Vane", "short_description": "Fictional poet (1888–1951)", "infobox_type": "writer",
     "infobox": {"birth_date": "4 May 1888", "death_date": "1951"}, "categories": ["1888 births"]},
    {"title": "Duskwater Press (publisher)", "short_description": "Independent publishing house",
     "infobox_type": "company", "infobox": {"founded": "1921", "founder": "Cedric Vane"},
     "categories": ["Publishing companies of Westshire"]},
    {"title": "Ell (river)", "short_description": "River in Westshire", "infobox_type": "river"},
    {"title": "Westshire", "short_description": "Ceremonial county", "infobox_type": "settlement"},
    {"title": "Harrow Lane Poets", "short_description": "Literary circle active 1910–1930",
     "infobox_type": "organization"},
    {"title": "Aldmoor (disambiguation)", "is_disambiguation": True},
    {"title": "List of abbeys", "is_list": True},
    {"title": "Brackenford", "short_description": "Market town in Westshire", "infobox_type": "settlement",
     "infobox": {"established": "1711"}},
]
# Sentences state relations the fact graph reads (hopforge.synth.relations): "is home to",
# "was painted by", infobox "founder: ...", "was a member of", "was led by", "published by", "based in",
# "located in". Ell -> Westshire states none on the Ell's page, nor do the lists.
TOY_LINKS = [
    ("Aldmoor", "Brannock Abbey", "Brannock Abbey", "Aldmoor is home to Brannock Abbey, a ruined monastery.", True),
    ("Aldmoor", "Westshire", "Westshire", "Aldmoor is a market town located in Westshire.", True),
    ("Aldmoor", "Aldmoor (disambiguation)", "other uses", "For other uses see Aldmoor.", False),
    ("Brannock Abbey", "Cedric Vane", "Cedric Vane", "The abbey was painted by Cedric Vane in his youth.", False),
    ("Brannock Abbey", "Ell (river)", "Ell", "The abbey stands beside the Ell.", True),
    ("Brannock Abbey", "List of abbeys", "abbeys", "It is one of many abbeys.", False),
    ("Cedric Vane", "Duskwater Press (publisher)", "Duskwater Press",
     "His collections were issued by Duskwater Press, which he co-founded.", True),
    ("Cedric Vane", "Harrow Lane Poets", "Harrow Lane Poets", "He was a member of the Harrow Lane Poets.", False),
    ("Duskwater Press (publisher)", "Cedric Vane", "Cedric Vane", "founder: Cedric Vane", True),
    ("Duskwater Press (publisher)", "Westshire", "Westshire", "The press is based in Westshire.", True),
    ("Harrow Lane Poets", "Cedric Vane", "Vane", "The poets were led by Vane.", True),
    ("Harrow Lane Poets", "Duskwater Press (publisher)", "Duskwater Press",
     "Its anthologies were published by Duskwater Press.", False),
    ("Westshire", "Brackenford", "Brackenford", "Towns include Brackenford.", False),
    ("Ell (river)", "Westshire", "Westshire", "The Ell flows through Westshire.", True),
    ("Westshire", "Aldmoor", "Aldmoor", "Towns include Aldmoor.", False),
    ("Westshire", "Ell (river)", "River Ell", "The River Ell drains the county.", False),
    ("List of abbeys", "Brannock Abbey", "Brannock Abbey", "Brannock Abbey", False),
    ("Aldmoor (disambiguation)", "Aldmoor", "Aldmoor", "Aldmoor, a town", False),
]
TOY_REDIRECTS = [("Duskwater", "Duskwater Press (publisher)"), ("Vane, Cedric", "Cedric Vane")]


@pytest.fixture
def toy_out(tmp_path: Path) -> Path:
    out = tmp_path / "data"
    build_graph(out, TOY_PAGES, TOY_LINKS, TOY_REDIRECTS)
    return out


@pytest.fixture
def toy_cfg(toy_out: Path):
    return toy_config(toy_out, **{"synth.n_questions": 20, "synth.hops_min": 2, "synth.hops_max": 3})


def toy_context(cfg: Config):
    """The question stage's per-process context (graph, clues, fact graph, search index) for ``cfg``."""
    from hopforge.stage import resolve
    from hopforge.synth.questions import context

    return context(cfg, resolve(cfg, "graph").fingerprint)


def path_of(ctx, titles: list[str]) -> tuple[list[int], list[int], str]:
    """(nodes, fact-graph edge ids, strategy) for a path given by titles; fails if a hop states no fact."""
    nodes = [ctx.view.node_of_title[t] for t in titles]
    edges = []
    for u, v in zip(nodes, nodes[1:]):
        e = ctx.facts.edge(u, v)
        assert e is not None, f"no fact relates {ctx.view.titles[u]!r} to {ctx.view.titles[v]!r}"
        edges.append(e)
    return nodes, edges, "uniform"


def chain_of(cfg: Config, titles: list[str]):
    """The planned chain of a walk given by titles (what compose_batch builds before composing)."""
    from hopforge.synth.questions import chains_from_paths, plan_chain

    ctx = toy_context(cfg)
    chain = chains_from_paths(ctx, [path_of(ctx, titles)], cfg.run.seed)[0]
    plan_chain(cfg, ctx, chain)
    return ctx, chain
