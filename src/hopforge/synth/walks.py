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
        # walker edge -> original CSR edge; int32 halves the bytes gathered per step on graphs < 2**31 edges
        self.edge = eid.astype(np.int32 if len(indices) < 2**31 else np.int64)
        self.dst = np.ascontiguousarray(indices[eid], dtype=np.int32)
        n_keep = np.bincount(src[eid], minlength=n)
        self.n_lead = np.bincount(src[eid][lead[eid]], minlength=n).astype(np.int64)
        self.n_other = (n_keep - self.n_lead).astype(np.int64)
        self.row_start = np.zeros(n, dtype=np.int64)
        np.cumsum(n_keep[:-1], out=self.row_start[1:])
        self.total = self.lead_weight * self.n_lead + self.n_other  # total edge weight per row
        self.allowed = np.asarray(allowed, dtype=bool) & (self.total > 0)
        # Packed per-node sampling table (float64 is exact for edge offsets below 2**53).
        self._tab = np.stack([self.total, self.lead_weight * self.n_lead * (1.0 - 1.0 / self.lead_weight),
                              self.row_start.astype(np.float64),
                              (self.row_start + self.n_lead + self.n_other - 1).astype(np.float64)], axis=1)
        self._inv_lw = 1.0 / self.lead_weight
        self._pick = np.maximum if self.lead_weight >= 1.0 else np.minimum

    def step(self, cur: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One weighted hop from each node in ``cur`` (all must have total > 0): (dst, walker edge).

        Draw x uniform in [0, total). Lead edges occupy [0, lead_mass) at
        ``lead_weight`` units each, the other edges 1 unit each after it, so the
        edge offset is x / lw in the lead region and x - c after it, with
        c = lead_mass * (1 - 1/lw). For lw >= 1 that is max(x / lw, x - c) (min
        for lw < 1): one gather of a packed per-node row, no branches.
        """
        d, k, _ = self._step(cur, rng)
        return d, k

    def _step(self, cur: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`step` that also returns each row's total weight (0 = dead end) from the same gather."""
        t = np.take(self._tab, cur, axis=0)  # one 32-byte row per walk: fewer cache misses than 4 gathers
        x = rng.random(len(cur)) * t[:, 0]
        v = self._pick(x * self._inv_lw, x - t[:, 1])
        v += t[:, 2]
        k = np.minimum(v, t[:, 3]).astype(np.int64)
        return np.take(self.dst, k, mode="wrap"), k, t[:, 0]

    def walk(self, starts: np.ndarray, hops: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray,
                                                                                             np.ndarray]:
        """Walk from ``starts`` for ``hops`` hops each, never revisiting a node.

        Walks are processed sorted by hop count (longest first), and each path
        position is its own contiguous column, so the walks still active at hop t
        are a prefix ``[:n_active]`` of every column: the hot path is slices and
        whole-array ops, never a per-walk gather. A walk that dies (dead end, or
        ``REVISIT_RETRIES`` re-draws all land on its own path) keeps being stepped
        with the others (cheaper than compacting) and is blanked at the end.
        Returns (nodes [m, H+1], edges [m, H] as original CSR edge ids, ok [m]) in
        the input order; failed walks have -1 from the hop where they died.
        """
        m = len(starts)
        H = int(hops.max()) if m else 0
        order = np.argsort(-hops, kind="stable")
        hs = hops[order]
        n_active = np.searchsorted(-hs, -np.arange(H), side="left")
        cols = [np.ascontiguousarray(starts[order], dtype=np.int32)] + [np.full(m, -1, np.int32) for _ in range(H)]
        ecols = [np.full(m, -1, np.int64) for _ in range(H)]
        died = np.full(m, H + 1, np.int32)  # hop at which the walk failed; H + 1 = never
        if self.dst.size == 0:
            died[:] = 0
            H = 0
        for t in range(H):
            na = int(n_active[t])
            if na == 0:
                break
            cur = cols[t][:na]
            d, k, tot = self._step(cur, rng)
            seen = cols[0][:na] == d
            for j in range(1, t + 1):
                seen |= cols[j][:na] == d
            stuck = tot == 0
            live = died[:na] > t
            retry = np.flatnonzero(seen & ~stuck & live)
            for _ in range(REVISIT_RETRIES):  # few walks: gathers on small index sets are fine here
                if retry.size == 0:
                    break
                d2, k2, _ = self._step(cur[retry], rng)
                again = cols[0][retry] == d2
                for j in range(1, t + 1):
                    again |= cols[j][retry] == d2
                good = retry[~again]
                d[good], k[good] = d2[~again], k2[~again]
                retry = retry[again]
            bad = stuck
            bad[retry] = True
            died[:na][bad & live] = t
            cols[t + 1][:na] = d
            ecols[t][:na] = np.take(self.edge, k)
        for t in range(H):
            gone = died <= t
            cols[t + 1][gone] = -1
            ecols[t][gone] = -1
        ok = died > H
        nodes = np.stack(cols, axis=1) if m else np.full((0, H + 1), -1, np.int32)
        edges = np.stack(ecols, axis=1) if m and H else np.full((m, H), -1, np.int64)
        if m and not (np.diff(hops) <= 0).all():  # callers that pass hops sorted longest-first skip the reorder
            inv = np.empty_like(order)
            inv[order] = np.arange(m)
            nodes, edges, ok = nodes[inv], edges[inv], ok[inv]
        return nodes, edges, ok


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
    # Not sorted: the planner keeps the first successful attempts of a block, so their order must be random.
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
