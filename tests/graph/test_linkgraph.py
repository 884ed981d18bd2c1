"""LinkGraph on the enwiki-233 graph: lookups, neighbourhoods, distances, stats."""

import networkx as nx

from hopforge.graph import LinkGraph
from hopforge.storage import query_arrow


def test_lookup_neighbors_and_edges(enwiki233):
    g = LinkGraph.load(enwiki233.run.out)
    lincoln = g.node_of("Abraham Lincoln")
    war = g.node_of("American Civil War")
    assert g.title_of(lincoln) == "Abraham Lincoln"
    assert g.node_of("abraham Lincoln") == lincoln  # first-letter case
    assert g.node_of("Not a page in this dump") is None
    assert war in g.neighbors(lincoln).tolist() and g.has_edge(lincoln, war)
    assert lincoln in g.predecessors(war).tolist()
    expected = query_arrow(enwiki233.run.out, "SELECT DISTINCT dst_title FROM links WHERE src_title = "
                                              "'Abraham Lincoln' AND dst_title <> 'Abraham Lincoln'").column(0)
    assert sorted(g.title_of(v) for v in g.neighbors(lincoln)) == sorted(expected.to_pylist())


def test_ego_shortest_path_and_alternatives(enwiki233):
    g = LinkGraph.load(enwiki233.run.out)
    a = g.node_of("Abraham Lincoln")
    ego = g.ego(a, radius=1)
    assert isinstance(ego, nx.DiGraph)
    assert set(ego.nodes) == {a, *g.neighbors(a).tolist()}
    war = g.node_of("American Civil War")
    assert ego.nodes[war]["title"] == "American Civil War" and ego.nodes[war]["hops"] == 1
    assert "position" in ego.edges[a, war]
    assert g.shortest_path_len(a, war) == 1
    assert g.shortest_path_len(a, a) == 0
    # Cross-check BFS distances against networkx on the whole (small) graph.
    full = nx.DiGraph()
    full.add_nodes_from(range(g.n_nodes))
    for u in range(g.n_nodes):
        full.add_edges_from((u, v) for v in g.neighbors(u).tolist())
    lengths = nx.single_source_shortest_path_length(full, a)
    for b in range(0, g.n_nodes, 7):
        assert g.shortest_path_len(a, b) == lengths.get(b)
        if b in lengths and lengths[b] >= 2:
            assert g.shortest_path_len(a, b, cutoff=lengths[b] - 1) is None
    far = next(b for b, d in lengths.items() if d == 2)
    paths = g.alternative_paths(a, far, cutoff=3, limit=20)
    assert paths and len(paths[0]) == 3 and all(p[0] == a and p[-1] == far for p in paths)
    assert all(full.has_edge(x, y) for p in paths for x, y in zip(p, p[1:], strict=False))


def test_stats(enwiki233):
    g = LinkGraph.load(enwiki233.run.out)
    st = g.stats()
    assert st["nodes"] == 233 and st["edges"] == g.n_edges
    assert st["out_degree"]["mean"] == round(g.n_edges / 233, 3)
    assert st["weak_components"] >= 1 and st["largest_scc"] <= 233
