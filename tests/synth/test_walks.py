"""Tests for src/hopforge/synth/walks.py: the vectorised walker."""

from __future__ import annotations

import numpy as np

from hopforge.synth.graph_view import GraphView
from hopforge.synth.walks import STRATEGIES, Walker, start_weights, walk_block


def _csr(n: int, edges: list[tuple[int, int]], lead: set[tuple[int, int]] = frozenset()):
    edges = sorted(edges)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount([s for s, _ in edges], minlength=n), out=indptr[1:])
    return indptr, np.array([d for _, d in edges], np.int32), np.array([e in lead for e in edges], bool)


def test_lead_links_are_chosen_in_proportion_to_lead_weight():
    # Node 0 has one lead link (to 1) and two plain links (to 2, 3); with weight 2 the lead link gets 2/4.
    indptr, indices, lead = _csr(4, [(0, 1), (0, 2), (0, 3)], {(0, 1)})
    w = Walker(indptr, indices, lead, np.ones(4, bool), lead_weight=2.0)
    d, _ = w.step(np.zeros(200_000, np.int32), np.random.default_rng(0))
    share = np.bincount(d, minlength=4) / len(d)
    assert abs(share[1] - 0.5) < 0.01 and abs(share[2] - 0.25) < 0.01 and abs(share[3] - 0.25) < 0.01
    w1 = Walker(indptr, indices, lead, np.ones(4, bool), lead_weight=1.0)
    d1, _ = w1.step(np.zeros(200_000, np.int32), np.random.default_rng(0))
    assert abs(np.bincount(d1, minlength=4)[1] / len(d1) - 1 / 3) < 0.01
    # A weight below 1 down-weights lead links: 0.5 / (0.5 + 2) = 0.2.
    wh = Walker(indptr, indices, lead, np.ones(4, bool), lead_weight=0.5)
    dh, _ = wh.step(np.zeros(200_000, np.int32), np.random.default_rng(0))
    assert abs(np.bincount(dh, minlength=4)[1] / len(dh) - 0.2) < 0.01


def test_walks_never_revisit_and_follow_edges():
    rng = np.random.default_rng(3)
    n = 300
    edges = {(int(a), int(b)) for a, b in rng.integers(0, n, (3000, 2)) if a != b}
    indptr, indices, lead = _csr(n, list(edges))
    w = Walker(indptr, indices, lead, np.ones(n, bool))
    hops = rng.integers(2, 9, 5000).astype(np.int32)
    nodes, e, ok = w.walk(rng.integers(0, n, 5000).astype(np.int32), hops, rng)
    assert ok.mean() > 0.9
    for i in np.flatnonzero(ok)[:2000]:
        path = nodes[i, : hops[i] + 1]
        assert len(set(path.tolist())) == len(path)  # no revisits
        assert (nodes[i, hops[i] + 1:] == -1).all()
        for j in range(hops[i]):
            assert (path[j], path[j + 1]) in edges
            assert indices[e[i, j]] == path[j + 1]  # edge id points at the original CSR edge


def test_excluded_nodes_are_never_visited_and_dead_ends_fail():
    # 0 -> 1 -> 2, 0 -> 3 (excluded), 3 -> 2. Node 2 has no out-links: 3-hop walks must fail.
    indptr, indices, lead = _csr(4, [(0, 1), (1, 2), (0, 3), (3, 2)])
    allowed = np.array([True, True, True, False])
    w = Walker(indptr, indices, lead, allowed)
    rng = np.random.default_rng(0)
    nodes, _, ok = w.walk(np.zeros(1000, np.int32), np.full(1000, 2, np.int32), rng)
    assert ok.all() and (nodes[:, 1] == 1).all() and (nodes[:, 2] == 2).all()
    _, _, ok3 = w.walk(np.zeros(100, np.int32), np.full(100, 3, np.int32), rng)
    assert not ok3.any()


def test_same_seed_same_block_and_mix_respected(toy_out):
    view = GraphView.load(toy_out)
    from hopforge.config import SynthConfig

    w = view.walker(SynthConfig())
    starts = start_weights(w, view.pagerank, view.revision_ts_s, 365.0)
    a = walk_block(w, starts, (0.4, 0.4, 0.2), 2, 4, seed=7, block=3)
    b = walk_block(w, starts, (0.4, 0.4, 0.2), 2, 4, seed=7, block=3)
    c = walk_block(w, starts, (0.4, 0.4, 0.2), 2, 4, seed=8, block=3)
    assert np.array_equal(a.nodes, b.nodes) and np.array_equal(a.hops, b.hops)
    assert not np.array_equal(a.nodes, c.nodes)
    assert set(np.unique(a.hops).tolist()) == {2, 3, 4}
    share = np.bincount(a.strategy, minlength=3) / len(a.strategy)
    assert abs(share[STRATEGIES.index("uniform")] - 0.4) < 0.05
    # The disambiguation and list pages (nodes 7, 8) are excluded by default: never on a path.
    assert not np.isin(a.nodes, [7, 8]).any()


def test_recency_favours_recent_pages():
    indptr, indices, lead = _csr(3, [(0, 1), (1, 2), (2, 0)])
    w = Walker(indptr, indices, lead, np.ones(3, bool))
    day = 86400.0
    p = start_weights(w, np.ones(3), np.array([0.0, 365 * day, 730 * day]), half_life_days=365.0)["recency"]
    assert np.allclose(p, np.array([0.25, 0.5, 1.0]) / 1.75)
