"""Vectorised, seeded random walks over the CSR link graph.

All walks of a block advance one hop at a time with numpy array operations:
there is no per-walk or per-step Python loop on the hot path, only a loop over
hop index (<= 8) and a few bounded revisit retries.

Per-hop choice is weighted by link position: a link in the lead section weighs
``lead_link_weight``, any other link 1. Because there are only two weight
classes, the walker re-orders each row's usable edges as [lead..., other...]
and samples an edge in O(1) per step (one uniform draw split at
``lead_weight * n_lead``) instead of a binary search over a cumulative sum.
Excluded nodes (disambiguation/list/date pages, hubs above ``max_in_degree``)
get weight 0: their edges are dropped from the walker's copy of the graph, so
a walk never enters them and never starts from them.

Determinism: block ``b`` of a run draws from ``numpy.random.default_rng([seed,
b])`` and always makes ``BLOCK_SIZE`` attempts, so the walks of a block do not
depend on how blocks are grouped into batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGIES = ("pagerank", "uniform", "recency")
# Attempts per block: fixed, so ids never depend on the batch split.
BLOCK_SIZE = 4096
# Re-draws for a walk whose sampled next node is already on its path.
REVISIT_RETRIES = 8


@dataclass
class WalkResult:
    """Walks of one block. ``nodes[i, :hops[i]+1]`` is walk i's path (CSR rows)."""

    nodes: np.ndarray  # int32 [m, H+1], -1 padded
    edges: np.ndarray  # int64 [m, H]: index into the graph's CSR edge arrays, -1 padded
    hops: np.ndarray  # int32 [m]: target hop count
    ok: np.ndarray  # bool [m]: reached its target hop count without dead end or revisit
    strategy: np.ndarray  # int8 [m]: index into STRATEGIES

    @property
    def steps(self) -> int:
        """Hops actually taken (successful edge traversals), for throughput numbers."""
        return int((self.edges >= 0).sum())


class Walker:
    """Random walker over a CSR graph with per-node eligibility and two link weights.

    ``indptr``/``indices`` is the graph (sorted rows), ``edge_in_lead`` marks lead
    links, ``allowed`` says which nodes a walk may visit. Start distributions are
    per-strategy probability vectors over nodes (see :func:`start_weights`).
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, edge_in_lead: np.ndarray, allowed: np.ndarray,
                 lead_weight: float = 2.0) -> None:
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices)
        n = len(indptr) - 1
        self.n_nodes = n
        self.lead_weight = float(lead_weight)
        src = np.repeat(np.arange(n, dtype=np.int32), np.diff(indptr))
        lead = np.asarray(edge_in_lead, dtype=bool)
        keep = np.flatnonzero(np.asarray(allowed, dtype=bool)[indices])
        # Primary key source row, secondary key "not lead": lead edges first in each row.
        order = np.lexsort((~lead[keep], src[keep]))
        eid = keep[order]
        self.edge = eid.astype(np.int64)  # walker edge -> original CSR edge
        self.dst = np.ascontiguousarray(indices[eid], dtype=np.int32)
        n_keep = np.bincount(src[eid], minlength=n)
        self.n_lead = np.bincount(src[eid][lead[eid]], minlength=n).astype(np.int64)
        self.n_other = (n_keep - self.n_lead).astype(np.int64)
        self.row_start = np.zeros(n, dtype=np.int64)
        np.cumsum(n_keep[:-1], out=self.row_start[1:])
        self.total = self.lead_weight * self.n_lead + self.n_other  # total edge weight per row
        self.allowed = np.asarray(allowed, dtype=bool) & (self.total > 0)

    def step(self, cur: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One weighted hop from each node in ``cur`` (all must have total > 0): (dst, walker edge)."""
        # np.take is several times faster than fancy indexing for 1-D gathers.
        nl = np.take(self.n_lead, cur)
        no = np.take(self.n_other, cur)
        lead_mass = self.lead_weight * nl
        x = rng.random(len(cur)) * (lead_mass + no)
        y = x - lead_mass
        # Lead region: every lead edge spans lead_weight units; the rest span 1 unit.
        off = np.where(y < 0, x / self.lead_weight, nl + y).astype(np.int64)
        # Floating-point guard: x can round up to exactly the row total.
        np.minimum(off, nl + no - 1, out=off)
        k = np.take(self.row_start, cur) + off
        return np.take(self.dst, k), k

    def walk(self, starts: np.ndarray, hops: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray,
                                                                                             np.ndarray]:
        """Walk from ``starts`` for ``hops`` hops each, never revisiting a node.

        Walks are processed sorted by hop count (longest first) so the walks still
        active at hop t are a prefix and the revisit check reads a contiguous view.
        Returns (nodes [m, H+1], edges [m, H] as original CSR edge ids, ok [m]) in
        the input order.
        """
        m = len(starts)
        H = int(hops.max()) if m else 0
        order = np.argsort(-hops, kind="stable")
        hs = hops[order]
        nodes = np.full((m, H + 1), -1, dtype=np.int32)
        edges = np.full((m, H), -1, dtype=np.int64)
        nodes[:, 0] = starts[order]
        alive = self.total[nodes[:, 0]] > 0
        # n_active[t] = number of walks whose target exceeds t (a prefix, hops sorted desc).
        n_active = np.searchsorted(-hs, -np.arange(H), side="left")
        for t in range(H):
            na = int(n_active[t])
            if na == 0:
                break
            pending = np.flatnonzero(alive[:na])
            if t > 0:  # a walk can reach a node with no usable out-edge
                dead = self.total[nodes[pending, t]] == 0
                alive[pending[dead]] = False
                pending = pending[~dead]
            for _ in range(REVISIT_RETRIES):
                if pending.size == 0:
                    break
                d, k = self.step(nodes[pending, t], rng)
                if pending.size == na:  # common case: contiguous prefix, no fancy-index copy
                    seen = (nodes[:na, : t + 1] == d[:, None]).any(axis=1)
                else:
                    seen = (nodes[pending, : t + 1] == d[:, None]).any(axis=1)
                good = ~seen
                nodes[pending[good], t + 1] = d[good]
                edges[pending[good], t] = self.edge[k[good]]
                pending = pending[seen]
            alive[pending] = False
        inv = np.empty_like(order)
        inv[order] = np.arange(m)
        ok = alive[inv]
        return nodes[inv], edges[inv], ok


def start_weights(walker: Walker, pagerank: np.ndarray, revision_ts_s: np.ndarray,
                  half_life_days: float) -> dict[str, np.ndarray]:
    """Start probability per strategy, restricted to nodes a walk can start from.

    ``recency`` favours pages whose latest revision is recent: weight
    ``0.5 ** (age / half_life)`` with age measured from the newest revision in
    the dump (not wall-clock time, so old dumps still spread their weight).
    Missing timestamps (NaN) get the oldest age.
    """
    ok = walker.allowed.astype(np.float64)
    pr = np.nan_to_num(np.asarray(pagerank, dtype=np.float64), nan=0.0) * ok
    ts = np.asarray(revision_ts_s, dtype=np.float64)
    if np.isfinite(ts).any():
        newest = np.nanmax(ts)
        age_days = (newest - np.where(np.isfinite(ts), ts, np.nanmin(ts))) / 86400.0
        rec = np.power(0.5, age_days / half_life_days) * ok
    else:
        rec = ok.copy()
    out = {}
    for name, w in (("pagerank", pr), ("uniform", ok), ("recency", rec)):
        s = w.sum()
        out[name] = w / s if s > 0 else (ok / ok.sum() if ok.sum() > 0 else ok)
    return out


def walk_block(walker: Walker, starts_p: dict[str, np.ndarray], mix: tuple[float, float, float], hops_min: int,
               hops_max: int, seed: int, block: int, size: int = BLOCK_SIZE) -> WalkResult:
    """The ``size`` walk attempts of block ``block`` (deterministic in seed and block)."""
    rng = np.random.default_rng([seed, block])
    p = np.asarray(mix, dtype=np.float64)
    strategy = rng.choice(len(STRATEGIES), size=size, p=p / p.sum()).astype(np.int8)
    hops = rng.integers(hops_min, hops_max + 1, size=size).astype(np.int32)
    starts = np.empty(size, dtype=np.int32)
    for i, name in enumerate(STRATEGIES):
        sel = np.flatnonzero(strategy == i)
        if sel.size:
            pvec = starts_p[name]
            if pvec.sum() <= 0:  # no eligible start at all: every walk of this block fails
                starts[sel] = 0
            else:
                starts[sel] = rng.choice(walker.n_nodes, size=sel.size, p=pvec)
    if walker.allowed.any():
        nodes, edges, ok = walker.walk(starts, hops, rng)
        ok &= walker.allowed[starts]
    else:
        nodes = np.full((size, hops_max + 1), -1, np.int32)
        edges = np.full((size, hops_max), -1, np.int64)
        ok = np.zeros(size, bool)
    return WalkResult(nodes=nodes, edges=edges, hops=hops, ok=ok, strategy=strategy)
