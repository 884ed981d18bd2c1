"""Walk throughput: the vectorised numpy walker vs a straightforward networkx Python-loop walker.

Both walkers do the same job on the same graph with the same walk count: start
nodes given, hop counts 2..6, lead links weighted 2x, no revisits (up to 8
re-draws, then the walk fails). Steps = hops actually taken.

Rates use CPU time (time.process_time) of this one process, so a machine shared with other jobs
distorts them less than wall time would (cache contention still does).

Graphs:
  * enwiki-233 (the real link graph, when an ingested OUT dir is given with --out
    or the graph stage is importable to ingest it into a temp dir);
  * a synthetic power-law graph of ``--medium-edges`` edges for the head-to-head
    (networkx needs ~0.5 KB per edge, so 10M edges would not fit beside six helpers);
  * a synthetic power-law graph of ``--edges`` (default 10M) edges: vectorised only.

    PYTHONPATH=src python benchmarks/walks.py [--out DIR] [--walks 100000] [--skip-big] [--edges 10000000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np

from hopforge.synth.walks import REVISIT_RETRIES, Walker


def power_law_csr(n_nodes: int, n_edges: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A directed graph with power-law out- and in-degrees (Pareto weights), CSR with sorted rows."""
    rng = np.random.default_rng(seed)
    out_w = rng.pareto(1.5, n_nodes) + 1
    in_w = rng.pareto(1.2, n_nodes) + 1
    m = int(n_edges * 1.08)  # duplicates and self loops are dropped below
    src = rng.choice(n_nodes, m, p=out_w / out_w.sum())
    dst = rng.choice(n_nodes, m, p=in_w / in_w.sum())
    key = np.unique(src.astype(np.int64) * n_nodes + dst)
    key = key[(key // n_nodes) != (key % n_nodes)][:n_edges]
    src, dst = key // n_nodes, (key % n_nodes).astype(np.int32)
    indptr = np.zeros(n_nodes + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n_nodes), out=indptr[1:])
    lead = rng.random(len(dst)) < 0.25
    return indptr, dst, lead


def nx_graph(indptr: np.ndarray, indices: np.ndarray, lead: np.ndarray) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(range(len(indptr) - 1))
    src = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    g.add_edges_from((int(s), int(d), {"w": 2.0 if le else 1.0}) for s, d, le in zip(src, indices, lead, strict=True))
    return g


def nx_walks(g: nx.DiGraph, starts: np.ndarray, hops: np.ndarray, seed: int) -> int:
    """The straightforward loop: one walk at a time, one hop at a time, random.choices over G[u]."""
    rnd = random.Random(seed)
    steps = 0
    for s, h in zip(starts.tolist(), hops.tolist(), strict=True):
        path = [s]
        seen = {s}
        for _ in range(h):
            nbrs = g[path[-1]]
            if not nbrs:
                break
            cand, weights = list(nbrs), [d["w"] for d in nbrs.values()]
            for _ in range(REVISIT_RETRIES):
                nxt = rnd.choices(cand, weights)[0]
                if nxt not in seen:
                    break
            else:
                break
            path.append(nxt)
            seen.add(nxt)
            steps += 1
    return steps


def bench_vectorised(w: Walker, starts: np.ndarray, hops: np.ndarray, seed: int, repeat: int = 3) -> tuple[float, int]:
    best = 0.0
    steps = 0
    for r in range(repeat):
        t = time.process_time()
        _, edges, _ = w.walk(starts, hops, np.random.default_rng([seed, r]))
        dt = time.process_time() - t
        steps = int((edges >= 0).sum())
        best = max(best, steps / dt)
    return best, steps


def head_to_head(name: str, indptr, indices, lead, walks: int, seed: int = 0) -> None:
    n = len(indptr) - 1
    rng = np.random.default_rng(seed)
    w = Walker(indptr, indices, lead, np.ones(n, bool), lead_weight=2.0)
    ok = np.flatnonzero(w.total > 0)
    starts = rng.choice(ok, walks).astype(np.int32)
    hops = rng.integers(2, 7, walks).astype(np.int32)
    t = time.process_time()
    g = nx_graph(indptr, indices, lead)
    t_build = time.process_time() - t
    t = time.process_time()
    nx_steps = nx_walks(g, starts, hops, seed)
    nx_rate = nx_steps / (time.process_time() - t)
    vec_rate, vec_steps = bench_vectorised(w, starts, hops, seed)
    print(f"| {name} | {n:,} | {len(indices):,} | {walks:,} | {nx_rate / 1e6:.3f} M ({nx_steps:,} steps; "
          f"graph build {t_build:.1f}s) | {vec_rate / 1e6:.2f} M ({vec_steps:,} steps) | {vec_rate / nx_rate:.0f}x |")


def vectorised_only(name: str, indptr, indices, lead, walks: int, seed: int = 0) -> None:
    n = len(indptr) - 1
    rng = np.random.default_rng(seed)
    t = time.process_time()
    w = Walker(indptr, indices, lead, np.ones(n, bool), lead_weight=2.0)
    t_setup = time.process_time() - t
    ok = np.flatnonzero(w.total > 0)
    starts = rng.choice(ok, walks).astype(np.int32)
    hops = rng.integers(2, 7, walks).astype(np.int32)
    rate, steps = bench_vectorised(w, starts, hops, seed)
    print(f"| {name} | {n:,} | {len(indices):,} | {walks:,} | (not run) | {rate / 1e6:.2f} M ({steps:,} steps; "
          f"walker setup {t_setup:.1f}s) | |")


def enwiki_csr(out: Path | None):
    from hopforge.storage.arrays import latest_run, load_arrays

    if out is None:
        try:
            from hopforge.config import load_config
            from hopforge.graph import run_ingest
        except ImportError:
            return None
        dump = Path(__file__).resolve().parents[1] / ".." / "shared" / "wiki" / "enwiki-233.xml.bz2"
        if not dump.exists():
            return None
        out = Path(tempfile.mkdtemp(prefix="hopforge-bench-")) / "data"
        run_ingest(load_config(None, {"run.out": str(out), "graph.dump": str(dump), "graph.workers": 1}))
    if latest_run(out, "graph") is None:
        return None
    arrays, _ = load_arrays(out, "graph", mmap=False)
    return arrays["indptr"], arrays["indices"], arrays["edge_in_lead"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="an OUT dir with an ingested graph (enwiki-233)")
    ap.add_argument("--walks", type=int, default=100_000, help="walks for the head-to-head runs")
    ap.add_argument("--medium-edges", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=10_000_000)
    ap.add_argument("--big-walks", type=int, default=1_000_000)
    ap.add_argument("--skip-big", action="store_true", help="only the head-to-head runs")
    args = ap.parse_args()
    print("| graph | nodes | edges | walks | networkx loop steps/s | vectorised steps/s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    csr = enwiki_csr(args.out)
    if csr is not None:
        head_to_head("enwiki-233", *csr, walks=args.walks)
    else:
        print("| enwiki-233 | (no ingested graph: pass --out) | | | | | |")
    head_to_head("power-law synthetic", *power_law_csr(args.medium_edges // 10, args.medium_edges), walks=args.walks)
    if args.skip_big:
        return
    big = power_law_csr(args.edges // 10, args.edges)
    vectorised_only("power-law synthetic", *big, walks=args.big_walks)


if __name__ == "__main__":
    main()
