"""Redirect chains, cycles, links via redirects, red links, PageRank (hand-made dump, no Wikipedia text)."""

import numpy as np

from hopforge.graph import run_ingest
from hopforge.graph.build import pagerank, resolve_redirects
from hopforge.storage import read_table

from .conftest import make_cfg, page_xml, write_dump


def _ingest(tmp_path, pages):
    cfg = make_cfg(tmp_path / "out", write_dump(tmp_path / "d.xml", pages), **{"graph.workers": 1})
    return cfg, run_ingest(cfg)


def test_redirect_chain_cycle_and_links_via_redirect(tmp_path):
    pages = (page_xml(1, "Paris", "Paris is in [[France]]. See [[Frankreich|the country]] and [[Nowhere]].")
             + page_xml(2, "France", "France has [[paris]] and [[Lutetia]] and [[Loop A]].")
             + page_xml(3, "Frankreich", "#REDIRECT [[French Republic]]", redirect="French Republic")
             + page_xml(4, "French Republic", "#REDIRECT [[France#History]]", redirect="France")
             + page_xml(5, "Lutetia", "#REDIRECT [[Paris]]", redirect="Paris")
             + page_xml(6, "Loop A", "#REDIRECT [[Loop B]]", redirect="Loop B")
             + page_xml(7, "Loop B", "#REDIRECT [[Loop A]]", redirect="Loop A"))
    cfg, stats = _ingest(tmp_path, pages)
    out = cfg.run.out
    red = {r["title"]: r for r in read_table(out, "redirects").to_pylist()}
    assert red["Frankreich"]["target"] == "France" and red["Frankreich"]["target_id"] == 2
    assert red["Frankreich"]["chain"] == ["French Republic"]
    assert red["French Republic"]["fragment"] == "History"
    assert red["Lutetia"]["target_id"] == 1
    assert red["Loop A"]["target_id"] is None and red["Loop B"]["target_id"] is None
    rejects = read_table(out, "rejects").to_pylist()
    assert {(r["reason"], r["row_id"]) for r in rejects} == {("redirect_cycle", "Loop A"), ("redirect_cycle", "Loop B")}

    links = {(r["src_title"], r["raw_target"]): r for r in read_table(out, "links").to_pylist()}
    via = links[("Paris", "Frankreich")]
    assert (via["dst_title"], via["dst_id"], via["via_redirect"], via["anchor"]) == ("France", 2, True, "the country")
    assert links[("Paris", "France")]["via_redirect"] is False
    assert links[("France", "Lutetia")]["dst_title"] == "Paris"
    assert ("Paris", "Nowhere") not in links and ("France", "Loop A") not in links
    pagerows = {r["title"]: r for r in read_table(out, "pages").to_pylist()}
    assert pagerows["Paris"]["red_links"] == 1  # [[Nowhere]]; redirects in the dump are not red
    assert pagerows["France"]["red_links"] == 0
    # Paris -> France twice (direct and via Frankreich): one CSR edge, the first occurrence.
    assert stats.edges == 2 and stats.links_via_redirect == 2
    assert stats.redirect_cycles == 2 and stats.nodes == 2 and stats.redirects == 5


def test_resolve_redirects_unit():
    res, cycles = resolve_redirects({"A": "B", "B": "C", "X": "Y", "Y": "X"}, {"C": 1})
    assert res["A"] == ("C", ["B"], True)
    assert res["X"][2] is False and sorted(map(tuple, cycles)) == [("X", "Y", "X"), ("Y", "X", "Y")]


def test_pagerank_matches_networkx():
    import networkx as nx

    edges = [(0, 1), (1, 2), (2, 0), (2, 3), (3, 0), (4, 0)]  # node 5 is dangling and isolated
    n = 6
    g = nx.DiGraph(edges)
    g.add_node(5)
    indptr = np.zeros(n + 1, dtype=np.int64)
    for s, _ in edges:
        indptr[s + 1] += 1
    indptr = np.cumsum(indptr)
    indices = np.array([d for _, d in sorted(edges)], dtype=np.int32)
    ours = pagerank(indptr, indices, n, 0.85)
    ref = nx.pagerank(g, alpha=0.85, tol=1e-12)
    assert np.allclose(ours, [ref[i] for i in range(n)], atol=1e-8)
