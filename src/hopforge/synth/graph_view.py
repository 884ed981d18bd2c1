"""What the synth stage reads from the graph stage: CSR arrays, nodes, and row look-ups.

Synth never imports the graph stage's internals: it reads the ``graph`` array
set and the ``nodes``/``pages``/``links``/``redirects`` tables through
:mod:`hopforge.storage`, exactly as the contract in the brief describes.
Tables are read from exactly one graph stage run (its fingerprint), so another
ingest in the same output directory never mixes in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from hopforge.config import SynthConfig
from hopforge.errors import ConfigError, StorageError
from hopforge.storage import schema_for, shard_paths
from hopforge.storage.arrays import latest_run, load_csr
from hopforge.synth.walks import Walker

FLAG_COLUMNS = {"disambiguation": "is_disambiguation", "list": "is_list", "date": "is_date"}
PAGE_COLUMNS = ["page_id", "title", "short_description", "infobox_type", "infobox", "categories", "lead"]


def _dataset(out: Path, table: str, run: str) -> pads.Dataset | None:
    paths = shard_paths(out, table, run)
    if not paths:
        return None
    return pads.dataset([str(p) for p in paths], schema=schema_for(table), format="parquet")


INFOBOX_FIELD = re.compile(r"^\s*[A-Za-z_][\w ]{0,40}:\s")


def is_prose(sentence: str | None) -> bool:
    """A sentence of running text (not an infobox "key: value" field, not a fragment)."""
    return bool(sentence) and not INFOBOX_FIELD.match(sentence) and len(sentence.split()) >= 5


@dataclass
class GraphView:
    """The CSR graph plus per-node columns, loaded once per process."""

    out: Path
    run: str
    indptr: np.ndarray
    indices: np.ndarray
    edge_position: np.ndarray
    edge_in_lead: np.ndarray
    page_id: np.ndarray  # int64 per node
    titles: list[str]
    pagerank: np.ndarray
    in_degree: np.ndarray
    flags: dict[str, np.ndarray]
    revision_ts_s: np.ndarray  # float64 seconds since epoch, NaN when unknown
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, out: str | Path, run: str | None = None) -> GraphView:
        """The graph of graph stage run ``run`` (default: the latest complete one)."""
        out = Path(out)
        if run is None and latest_run(out, "graph") is None:
            raise StorageError(f"no link graph under {out}: run `hopforge ingest` before `hopforge questions`")
        csr = load_csr(out, run)
        run = csr.run
        ds = _dataset(out, "nodes", run)
        if ds is None:
            raise StorageError(f"no nodes table under {out}: the graph stage did not finish (run `hopforge ingest`)")
        nodes = ds.to_table().sort_by("node")
        n = csr.n_nodes
        node_col = nodes.column("node").to_numpy()
        if len(node_col) != n or not np.array_equal(node_col, np.arange(n)):
            raise StorageError(f"nodes table under {out} has {len(node_col)} rows but the graph {n} nodes "
                               f"(run={run}); re-run `hopforge ingest`")
        ts = nodes.column("revision_timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)
        ts_s = np.where(pc.is_null(nodes.column("revision_timestamp")).to_numpy(zero_copy_only=False), np.nan,
                        np.nan_to_num(ts.astype(np.float64)) / 1e6)
        return cls(
            out=out, run=run,
            indptr=np.asarray(csr.indptr, dtype=np.int64),
            indices=np.asarray(csr.indices, dtype=np.int32),
            edge_position=np.asarray(csr.edge_position, dtype=np.int32),
            edge_in_lead=np.asarray(csr.edge_in_lead, dtype=bool),
            page_id=nodes.column("page_id").to_numpy(),
            titles=nodes.column("title").to_pylist(),
            pagerank=nodes.column("pagerank").fill_null(0.0).to_numpy(),
            in_degree=nodes.column("in_degree").fill_null(0).to_numpy(),
            flags={k: nodes.column(col).fill_null(False).to_numpy(zero_copy_only=False)
                   for k, col in FLAG_COLUMNS.items()},
            revision_ts_s=ts_s,
            meta=csr.meta,
        )

    @property
    def n_nodes(self) -> int:
        return len(self.indptr) - 1

    def allowed(self, cfg: SynthConfig) -> np.ndarray:
        """Nodes a walk may visit: not flagged by ``exclude_flags``, not above ``max_in_degree``."""
        ok = np.ones(self.n_nodes, dtype=bool)
        for flag in cfg.exclude_flags:
            if flag not in self.flags:
                raise ConfigError(f"synth.exclude_flags: unknown flag {flag!r}; known: {sorted(self.flags)}")
            ok &= ~self.flags[flag]
        if cfg.max_in_degree is not None:
            ok &= self.in_degree <= cfg.max_in_degree
        return ok

    def walker(self, cfg: SynthConfig) -> Walker:
        return Walker(self.indptr, self.indices, self.edge_in_lead, self.allowed(cfg), cfg.lead_link_weight)

    def out_neighbours(self, node: int) -> np.ndarray:
        return self.indices[self.indptr[node]:self.indptr[node + 1]]

    @cached_property
    def _transpose(self) -> tuple[np.ndarray, np.ndarray]:
        src = np.repeat(np.arange(self.n_nodes, dtype=np.int32), np.diff(self.indptr))
        order = np.argsort(self.indices, kind="stable")
        t_indptr = np.zeros(self.n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.indices, minlength=self.n_nodes), out=t_indptr[1:])
        return t_indptr, src[order]

    def in_neighbours(self, node: int) -> np.ndarray:
        t_indptr, t_indices = self._transpose
        return t_indices[t_indptr[node]:t_indptr[node + 1]]

    @cached_property
    def node_of_page(self) -> dict[int, int]:
        return {int(p): i for i, p in enumerate(self.page_id)}

    @cached_property
    def node_of_title(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.titles)}

    # ------------------------------------------------------------------ row look-ups

    def pages(self, page_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Page rows (without the full text) by page id."""
        ids = sorted({int(p) for p in page_ids})
        ds = _dataset(self.out, "pages", self.run)
        if ds is None or not ids:
            return {}
        t = ds.to_table(columns=PAGE_COLUMNS, filter=pc.field("page_id").isin(ids))
        return {r["page_id"]: r for r in t.to_pylist()}

    def links(self, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], dict[str, Any]]:
        """Evidence link rows (anchor, sentence) keyed by the edge's (src page id, position).

        The CSR edge points at the first link from src to dst. When that link
        sits in an infobox field ("map_caption: ...") or a fragment of under five
        words, the first later link to the same page with a prose sentence is
        returned instead: a "relation evidence" sentence should state the relation.
        """
        pairs = set(pairs)
        ds = _dataset(self.out, "links", self.run)
        if ds is None or not pairs:
            return {}
        srcs = sorted({s for s, _ in pairs})
        t = ds.to_table(columns=["src_id", "position", "anchor", "sentence", "dst_id"],
                        filter=pc.field("src_id").isin(srcs))
        rows = sorted(t.to_pylist(), key=lambda r: (r["src_id"], r["position"]))
        by_pos = {(r["src_id"], r["position"]): r for r in rows}
        by_dst: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for r in rows:
            by_dst.setdefault((r["src_id"], r["dst_id"]), []).append(r)
        out = {}
        for key in pairs:
            r = by_pos.get(key)
            if r is None:
                continue
            if not is_prose(r["sentence"]):
                r = next((o for o in by_dst[(r["src_id"], r["dst_id"])] if is_prose(o["sentence"])), r)
            out[key] = r
        return out

    def anchors_and_redirects(self, page_ids: Iterable[int]) -> dict[int, dict[str, list[str]]]:
        """Per answer page: redirect titles pointing at it and anchor texts used for it (by frequency)."""
        ids = sorted({int(p) for p in page_ids})
        result: dict[int, dict[str, list[str]]] = {p: {"redirects": [], "anchors": []} for p in ids}
        if not ids:
            return result
        red = _dataset(self.out, "redirects", self.run)
        if red is not None:
            t = red.to_table(columns=["title", "target_id"], filter=pc.field("target_id").isin(ids))
            for r in sorted(t.to_pylist(), key=lambda r: r["title"]):
                result[r["target_id"]]["redirects"].append(r["title"])
        links = _dataset(self.out, "links", self.run)
        if links is not None:
            t = links.to_table(columns=["dst_id", "anchor"], filter=pc.field("dst_id").isin(ids))
            counts: dict[int, dict[str, int]] = {}
            for r in t.to_pylist():
                if r["anchor"]:
                    c = counts.setdefault(r["dst_id"], {})
                    c[r["anchor"]] = c.get(r["anchor"], 0) + 1
            for pid, c in counts.items():
                result[pid]["anchors"] = [a for a, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]
        return result
