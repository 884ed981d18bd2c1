"""The graph stage: dump -> pages, links_raw, redirects_raw (one batch of pages at a time), then the
whole-dump step that resolves redirects and links into ``links``, ``nodes`` and the CSR arrays."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hopforge.config import Config
from hopforge.errors import DumpError
from hopforge.graph.build import build_graph
from hopforge.graph.fetch import is_url
from hopforge.graph.ingest import dump_identity, ingest_batch, plan_ingest
from hopforge.stage import Batch, Empty, Stage, StageRun, StageStats, run_stage, stage_records
from hopforge.storage.arrays import load_arrays

# Rejects of step read_dump that mean the dump ends early (everything before them is intact).
BROKEN_DUMP = ("truncated_dump", "truncated_page", "corrupt_compressed_stream")
BUILD = Batch("build_graph", -1)


@dataclass
class GraphStats(StageStats):
    pages: int = 0
    raw_pages: int = 0
    redirects: int = 0
    links_raw: int = 0
    nodes: int = 0
    edges: int = 0
    links: int = 0
    links_via_redirect: int = 0
    redirect_cycles: int = 0
    dump: str | None = field(default=None, metadata={"merge": "first"})


class GraphStage(Stage):
    name = "graph"
    writes = ("pages", "links_raw", "redirects_raw", "ingest_batches", "rejects", "redirects", "links", "nodes")
    section = "graph"
    # Where the dump comes from and how many processes parse it change nothing in the tables
    # (the dump's content is keyed by its identity); allow_truncated only decides whether to go on.
    execution_keys: ClassVar[frozenset[str]] = frozenset(
        {"dump", "export_titles", "export_url", "workers", "allow_truncated"})
    version = "2"
    stats_type = GraphStats

    def settings(self, cfg: Config) -> dict[str, Any]:
        return {**super().settings(cfg), "dump": _dump_identity(cfg)}

    def workers(self, cfg: Config) -> int:
        return cfg.graph.workers

    def plan(self, run: StageRun) -> list[Batch]:
        batches = plan_ingest(run.cfg)
        if not batches:
            raise Empty(f"the dump has 0 pages in namespaces {run.cfg.graph.namespaces}")
        return [Batch(b.batch_id, b.index, b) for b in batches]

    def run_batch(self, run: StageRun, batch: Batch) -> GraphStats:
        t0 = time.process_time()
        parsed, row = ingest_batch(run.cfg, batch.payload)
        infos = run.commit({"rejects": parsed.rejects, "links_raw": parsed.links, "redirects_raw": parsed.redirects,
                            "pages": parsed.pages, "ingest_batches": [row]}, batch)
        rows: Counter[str] = Counter()
        for i in infos:
            rows[i.table] += i.rows
        return GraphStats(pages=len(parsed.pages), raw_pages=parsed.raw_pages, redirects=len(parsed.redirects),
                          links_raw=parsed.links.num_rows, rows=dict(rows),
                          rejects=dict(Counter(r["reason"] for r in parsed.rejects)), dump=batch.payload.source,
                          cpu_seconds=time.process_time() - t0)

    def finish(self, run: StageRun, stats: StageStats) -> StageStats:
        assert isinstance(stats, GraphStats)
        _check_intact(run)
        if not run.committed(BUILD, ["nodes", "links", "redirects", "rejects"]):
            g = build_graph(run, run.cfg.graph.pagerank_alpha)
            stats.rows = {**stats.rows, "links": g["links"], "nodes": g["nodes"], "redirects": g["redirects"]}
            stats.links, stats.links_via_redirect, stats.redirect_cycles = (
                g["links"], g["links_via_redirect"], g["redirect_cycles"])
        _arrays, meta = load_arrays(run.out, "graph", run.fingerprint)
        stats.nodes, stats.edges = meta["n_nodes"], meta["n_edges"]
        if stats.nodes == 0:
            # From the table, not stats.redirects: that counts only the batches this invocation parsed.
            redirects = run.read("redirects", columns=[]).num_rows
            stats.empty = f"the dump yielded 0 article pages ({redirects} redirects): nothing to walk"
        elif stats.edges == 0:
            stats.empty = f"the graph has 0 links between its {stats.nodes} pages: no walk can leave its start"
        return stats


def _check_intact(run: StageRun) -> None:
    """A dump that ends early fails the stage, naming where, unless graph.allow_truncated."""
    import pyarrow.compute as pc

    rj = run.read("rejects", stage="graph", columns=["step", "reason", "detail"])
    broken = rj.filter(pc.and_(pc.equal(rj.column("step"), "read_dump"),
                               pc.is_in(rj.column("reason"), value_set=_pa_strings(BROKEN_DUMP)))).to_pylist()
    if not broken or run.cfg.graph.allow_truncated:
        return
    pages = run.read("pages", columns=[]).num_rows
    b = broken[0]
    raise DumpError(f"the dump ends early ({b['reason']}): {b['detail']}. The {pages} pages before it are "
                    f"ingested and kept under {run.out}; pass --allow-truncated (graph.allow_truncated = true) "
                    "to build the graph from them, or fetch the dump again")


def _pa_strings(values: tuple[str, ...]) -> Any:
    import pyarrow as pa

    return pa.array(values, pa.string())


def _dump_identity(cfg: Config) -> dict[str, Any]:
    """What the dump is, for the fingerprint: its content identity, not where it lies."""
    g = cfg.graph
    if is_url(g.dump):
        return {"url": g.dump}
    path = Path(g.dump)
    if path.exists():
        return dump_identity(path)
    if g.export_titles is not None and Path(g.export_titles).exists():
        digest = hashlib.sha256(Path(g.export_titles).read_bytes()).hexdigest()[:20]
        return {"export_titles": digest, "export_url": g.export_url}
    # The dump is gone (deleted after ingest): downstream stages still read the graph built from a
    # file of that name, the most recent complete one. With none, the identity names the missing
    # file; planning the graph stage then fails with "dump not found".
    done = [r for r in stage_records(cfg.run.out) if r["stage"] == "graph" and r["complete"]
            and r["settings"].get("dump", {}).get("name") == path.name]
    if done:
        return max(done, key=lambda r: r["complete"]["at"])["settings"]["dump"]
    return {"name": path.name, "absent": True}


def run_ingest(cfg: Config, **kwargs: Any) -> GraphStats:
    """Run the graph stage for ``cfg`` with the local executor (what ``hopforge ingest`` does)."""
    stats = run_stage("graph", cfg, **kwargs)
    assert isinstance(stats, GraphStats)
    return stats
