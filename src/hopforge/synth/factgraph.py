"""The fact graph the walker walks: an edge u -> v wherever the dump states a fact relating u to v.

Built from the graph stage's ``links`` table (every link row, with its
sentence): for each linked pair of pages, :func:`hopforge.synth.relations.best_relation`
reads the fact the links state. A fact stated on u's page about v gives the edge u -> v
("u was born in v"); its inverse gives v -> u ("v is the birthplace of u") unless v's own
page states a fact about u. So a walk only takes hops that can be phrased as facts, and
may take a link against its direction when the fact reads both ways (issue 15: "prefer
walk edges whose evidence sentence yields a usable relation, and re-draw hops that yield
none": an edge without a fact is never drawn).

Edges are sorted by (source, destination), CSR style, so :class:`~hopforge.synth.walks.Walker`
walks them exactly as it walks the link graph; ``in_lead`` keeps the lead-link weighting.

Scale: one pass over every link row and its sentence, ~100 s of regexes at 100k pages, streamed
through buckets by source page so memory does not grow with the dump. It runs once per graph run,
not once per process: :func:`cached_fact_graph` keeps the graph under
``OUT/_cache/facts-<key>/`` (CSR arrays as ``.npy``, the facts as an Arrow IPC file), and every
later process memory-maps it: no link row, sentence or :class:`Fact` object is loaded until a
question asks for that edge. The key covers the graph run's ``links``/``pages`` shard checksums and
the source of the code that reads facts (this module, the relation lexicon, the person test), so a
change to either builds a new cache instead of serving stale facts.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hopforge.synth import cache, describe, relations
from hopforge.synth.describe import is_person
from hopforge.synth.relations import best_relation, inverse


@dataclass(frozen=True)
class Fact:
    """One fact edge: ``phrase`` relates its source entity to its destination."""

    phrase: str
    source: str  # infobox:<key> | sentence
    stated_on: int  # node whose page states it (the hop's source, or its destination for an inverse)
    anchor: str | None
    sentence: str | None
    in_lead: bool


FACT_SCHEMA = pa.schema([("phrase", pa.string()), ("source", pa.string()), ("stated_on", pa.int32()),
                         ("anchor", pa.string()), ("sentence", pa.string())])


class FactTable(Sequence[Fact]):
    """The facts of a fact graph's edges, one row per edge, read from an Arrow table (memory-mapped
    when it comes from the cache): a :class:`Fact` is made only for the edges asked for."""

    def __init__(self, table: pa.Table, in_lead: np.ndarray) -> None:
        self.table = table
        self._cols = [table.column(name) for name in FACT_SCHEMA.names]
        self._in_lead = in_lead
        self._n = table.num_rows

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Fact: ...
    @overload
    def __getitem__(self, i: slice) -> list[Fact]: ...
    def __getitem__(self, i: int | slice) -> Fact | list[Fact]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"fact {i} out of range ({self._n} edges)")
        phrase, source, stated_on, anchor, sentence = (c[i].as_py() for c in self._cols)
        return Fact(phrase, source, stated_on, anchor, sentence, bool(self._in_lead[i]))


@dataclass
class FactGraph:
    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 destination node per edge
    in_lead: np.ndarray  # bool per edge
    facts: Sequence[Fact]

    @property
    def n_edges(self) -> int:
        return len(self.indices)

    def edge(self, u: int, v: int) -> int | None:
        row = self.indices[self.indptr[u]:self.indptr[u + 1]]
        j = int(np.searchsorted(row, v))
        return int(self.indptr[u]) + j if j < len(row) and row[j] == v else None


FACT_CHUNK_ROWS = 50_000  # link rows turned into Python objects at a time
BUCKET_ROWS = 500_000  # link rows per source bucket: one step of the build holds one, sorted (~150 MB)
LINK_COLUMNS = ["src_id", "dst_id", "position", "anchor", "sentence", "in_lead"]
_FORWARD = pa.schema([("u", pa.int32()), ("v", pa.int32()), ("phrase", pa.string()), ("source", pa.string()),
                      ("anchor", pa.string()), ("sentence", pa.string()), ("in_lead", pa.bool_())])


def build_fact_graph(n_nodes: int, node_of_page: dict[int, int], titles: list[str], links: Any,
                     pages: Any, spill_dir: str | Path | None = None) -> FactGraph:
    """The fact graph over ``n_nodes`` from ``links`` (a table or a dataset with src_id, dst_id,
    position, anchor, sentence, in_lead) and page rows by page id (a mapping with ``get``, for the
    person test of a sentence's subject).

    Memory does not grow with the dump: the links are streamed into buckets by source page on disk
    (under ``spill_dir``, default the system's temporary directory), each bucket's facts are read
    and spilled, and the inverses and the (source, destination) order are computed over integer
    arrays; the facts themselves stay on disk, memory-mapped (the result's :class:`FactTable`)."""
    root = cache.scratch_dir(Path(spill_dir or tempfile.gettempdir()), "hopforge-facts-")
    pool = pa.default_memory_pool()  # hand back what each phase's Arrow buffers held (mimalloc keeps it)
    try:
        buckets = _buckets(links, root)
        pool.release_unused()
        forward = _forward_facts(buckets, node_of_page, titles, pages, root / "forward.arrow")
        del buckets
        pool.release_unused()
        graph = _assemble(n_nodes, forward, root / "facts.arrow")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    # Removed with the graph (its facts are memory-mapped from there until then).
    weakref.finalize(graph.facts, shutil.rmtree, root, True)
    return graph


def _batches(links: Any) -> tuple[int, Iterator[pa.RecordBatch]]:
    if isinstance(links, pa.Table):
        t = links.select(LINK_COLUMNS)
        t = t.filter(pc.is_valid(t.column("dst_id")))
        return t.num_rows, iter(t.to_batches(max_chunksize=1 << 16))
    # File by file, a row group at a time: a dataset scan reads ahead several files and row groups,
    # and Arrow's pool keeps what it held (~700 MB after 4M links with their sentences).
    files = list(links.files)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    def batches() -> Iterator[pa.RecordBatch]:
        for f in files:
            with pq.ParquetFile(f) as pf:
                for batch in pf.iter_batches(batch_size=1 << 16, columns=LINK_COLUMNS):
                    yield batch.filter(pc.is_valid(batch.column("dst_id")))

    return rows, batches()


def _buckets(links: Any, root: Path) -> list[pa.Table]:
    """The link rows with a target, split by ``src_id`` into buckets of about :data:`BUCKET_ROWS`
    rows on disk (every row of a source page in one bucket), memory-mapped."""
    rows, batches = _batches(links)
    n = max(1, -(-rows // BUCKET_ROWS))
    schema = None
    writers: dict[int, Any] = {}
    try:
        for batch in batches:
            if schema is None:
                schema = batch.schema
            bucket = batch.column("src_id").to_numpy(zero_copy_only=False) % n
            order = np.argsort(bucket, kind="stable")
            grouped, bucket = batch.take(pa.array(order)), bucket[order]
            cuts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1], True])
            for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
                b = int(bucket[lo])
                if b not in writers:
                    writers[b] = pa.ipc.new_file(str(root / f"links-{b}.arrow"), schema)
                writers[b].write_batch(grouped.slice(lo, hi - lo))
    finally:
        for w in writers.values():
            w.close()
    return [pa.ipc.open_file(pa.memory_map(str(root / f"links-{b}.arrow"))).read_all() for b in sorted(writers)]


def _forward_facts(buckets: list[pa.Table], node_of_page: dict[int, int], titles: list[str], pages: Any,
                   path: Path) -> pa.Table:
    """The fact each linked pair of pages states (u -> v), one bucket at a time, written to ``path``
    and returned memory-mapped. Link rows become Python dicts a chunk of (src, dst) groups at a time:
    a dict per link for the whole dump costs ~1 KB each (hundreds of GB on enwiki)."""
    with pa.ipc.new_file(str(path), _FORWARD) as writer:
        for links in buckets:
            person: dict[int, bool] = {}  # per source page: is_person once per page, not per link group
            src = links.column("src_id").to_numpy(zero_copy_only=False)
            dst = links.column("dst_id").to_numpy(zero_copy_only=False)
            pos = links.column("position").to_numpy(zero_copy_only=False)
            order = np.lexsort((pos, dst, src))
            if not len(order):
                continue
            s_sorted, d_sorted = src[order], dst[order]
            del src, dst, pos
            # One sorted copy of the bucket, sliced below: a take per chunk from the memory-mapped
            # bucket's many small record batches would concatenate them every time.
            links = links.take(order)
            starts = np.flatnonzero(np.r_[True, (s_sorted[1:] != s_sorted[:-1]) | (d_sorted[1:] != d_sorted[:-1])])
            bounds = np.r_[starts, len(order)]
            g = 0
            while g < len(starts):
                g_end = int(np.searchsorted(bounds, bounds[g] + FACT_CHUNK_ROWS, side="right")) - 1
                g_end = min(max(g_end, g + 1), len(starts))  # whole groups, at least one
                lo, hi = int(bounds[g]), int(bounds[g_end])
                rows = links.slice(lo, hi - lo).to_pylist()
                out: dict[str, list[Any]] = {name: [] for name in _FORWARD.names}
                for a, b in zip(bounds[g:g_end] - lo, bounds[g + 1:g_end + 1] - lo, strict=True):
                    group = rows[a:b]
                    key = (group[0]["src_id"], group[0]["dst_id"])
                    u, v = node_of_page.get(key[0]), node_of_page.get(key[1])
                    if u is None or v is None or u == v:
                        continue
                    if key[0] not in person:
                        person[key[0]] = is_person(pages.get(key[0]) or {})
                    rel = best_relation(group, titles[u], person[key[0]])
                    if rel is not None:
                        for name, value in zip(_FORWARD.names, (u, v, rel.phrase, rel.source, rel.anchor, rel.sentence,
                                                                any(r.get("in_lead") for r in group
                                                                    if r["position"] == rel.position)), strict=True):
                            out[name].append(value)
                writer.write_table(pa.table(out, schema=_FORWARD))
                g = g_end
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def _assemble(n_nodes: int, forward: pa.Table, path: Path) -> FactGraph:
    """Forward facts plus their inverses (v -> u, unless v's page states a fact about u), sorted by
    (source, destination) into CSR arrays and a facts table written to ``path`` a chunk at a time."""
    u = forward.column("u").to_numpy(zero_copy_only=False).astype(np.int64)
    v = forward.column("v").to_numpy(zero_copy_only=False).astype(np.int64)
    phrases = forward.column("phrase").dictionary_encode().combine_chunks()
    inv_of = pa.array([inverse(p) for p in phrases.dictionary.to_pylist()], pa.string())
    has_inv = pc.is_valid(pc.take(inv_of, phrases.indices)).to_numpy(zero_copy_only=False)
    fkey = np.sort(u * n_nodes + v)
    back = v * n_nodes + u
    has_inv &= ~_isin_sorted(back, fkey)
    inv_rows = np.flatnonzero(has_inv)
    row = np.r_[np.arange(len(u)), inv_rows]  # the forward row each edge comes from
    is_inv = np.r_[np.zeros(len(u), bool), np.ones(len(inv_rows), bool)]
    src = np.r_[u, v[inv_rows]]
    dst = np.r_[v, u[inv_rows]]
    order = np.lexsort((dst, src))
    row, is_inv, src, dst = row[order], is_inv[order], src[order], dst[order]
    in_lead = forward.column("in_lead").to_numpy(zero_copy_only=False)[row].astype(bool)
    batches = forward.to_batches()
    starts = np.cumsum([0] + [b.num_rows for b in batches])
    with pa.ipc.new_file(str(path), FACT_SCHEMA) as writer:
        for lo in range(0, len(row), 1 << 16):
            part = _take(batches, starts, row[lo:lo + (1 << 16)])
            inv = pa.array(is_inv[lo:lo + (1 << 16)])
            fwd_phrase = part.column("phrase").combine_chunks()
            phrase = pc.if_else(inv, pc.take(inv_of, pc.index_in(fwd_phrase, phrases.dictionary)), fwd_phrase)
            writer.write_table(pa.table({"phrase": phrase, "source": part.column("source"),
                                         "stated_on": part.column("u"), "anchor": part.column("anchor"),
                                         "sentence": part.column("sentence")}, schema=FACT_SCHEMA))
    indptr = np.zeros(n_nodes + 1, np.int64)
    if len(src):
        np.cumsum(np.bincount(src, minlength=n_nodes), out=indptr[1:])
    facts = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    return FactGraph(indptr=indptr, indices=dst.astype(np.int32), in_lead=in_lead, facts=FactTable(facts, in_lead))


def _take(batches: list[pa.RecordBatch], starts: np.ndarray, rows: np.ndarray) -> pa.Table:
    """Rows ``rows`` (in that order) of the table made of ``batches`` (``starts``: each batch's first
    row), taken batch by batch: ``Table.take`` over a memory-mapped table of many record batches
    concatenates whole columns first, every call (GBs of sentences at scale)."""
    which = np.searchsorted(starts, rows, side="right") - 1
    order = np.argsort(which, kind="stable")
    parts = []
    cuts = np.flatnonzero(np.r_[True, np.diff(which[order]) != 0, True]) if len(rows) else np.zeros(1, np.int64)
    for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
        idx = order[lo:hi]
        b = int(which[idx[0]])
        parts.append(batches[b].take(pa.array(rows[idx] - starts[b])))
    if not parts:
        return pa.Table.from_batches([], schema=batches[0].schema if batches else _FORWARD)
    grouped = pa.Table.from_batches(parts).combine_chunks()  # these rows only
    back = np.empty(len(rows), np.int64)
    back[order] = np.arange(len(rows))
    return grouped.take(pa.array(back))


def _isin_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    j = np.searchsorted(sorted_keys, values)
    j[j == len(sorted_keys)] = 0
    return sorted_keys[j] == values if len(sorted_keys) else np.zeros(len(values), bool)


# ---------------------------------------------------------------------------- the on-disk cache

CACHE_FORMAT = 1
_ARRAYS = ("indptr", "indices", "in_lead")


def fact_cache_dir(out: str | Path, graph_run: str) -> Path:
    """Where graph run ``graph_run``'s fact graph is cached: keyed by its ``links`` and ``pages``
    shards (by checksum) and by the source of the code that reads facts from them."""
    return cache.cache_dir(out, graph_run, "facts", ("links", "pages"), (relations, describe, sys.modules[__name__]),
                           CACHE_FORMAT)


def save_fact_graph(graph: FactGraph, path: Path) -> None:
    """Write ``graph`` to ``path`` (atomically: see :func:`hopforge.synth.cache.write_atomically`)."""
    facts = graph.facts
    if isinstance(facts, FactTable):  # streamed from its (memory-mapped) table
        table: Any = (FACT_SCHEMA, (facts.table.slice(lo, 1 << 16) for lo in range(0, len(facts), 1 << 16)))
    else:
        table = pa.table({
            "phrase": pa.array([f.phrase for f in facts], pa.string()),
            "source": pa.array([f.source for f in facts], pa.string()),
            "stated_on": pa.array([f.stated_on for f in facts], pa.int32()),
            "anchor": pa.array([f.anchor for f in facts], pa.string()),
            "sentence": pa.array([f.sentence for f in facts], pa.string()),
        }, schema=FACT_SCHEMA)
    cache.write_atomically(path, {name: getattr(graph, name) for name in _ARRAYS}, {"facts": table},
                           {"format": CACHE_FORMAT, "n_nodes": len(graph.indptr) - 1, "n_edges": graph.n_edges})


def load_fact_graph(path: Path, n_nodes: int) -> FactGraph:
    """The cached fact graph at ``path``, memory-mapped; :class:`StorageError` naming the directory
    if a part is missing, unreadable or does not fit the rest."""
    meta, arrays, tables = cache.read_dir(path, _ARRAYS, ("facts",))
    table, indptr, n_edges = tables["facts"], arrays["indptr"], meta.get("n_edges")
    problems = []
    if meta.get("format") != CACHE_FORMAT or meta.get("n_nodes") != n_nodes:
        problems.append(f"meta.json says {meta}, expected format {CACHE_FORMAT} over {n_nodes} nodes")
    if len(indptr) != n_nodes + 1 or int(indptr[-1]) != n_edges:
        problems.append(f"indptr.npy has {len(indptr)} entries ending at {int(indptr[-1]) if len(indptr) else '-'}, "
                        f"expected {n_nodes + 1} ending at {n_edges}")
    for name, arr in (("indices.npy", arrays["indices"]), ("in_lead.npy", arrays["in_lead"]), ("facts.arrow", table)):
        if len(arr) != n_edges:
            problems.append(f"{name} has {len(arr)} rows, expected {n_edges}")
    if table.schema != FACT_SCHEMA:
        problems.append(f"facts.arrow has schema {table.schema}, expected {FACT_SCHEMA}")
    cache.inconsistent(path, problems)
    return FactGraph(indptr=indptr, indices=arrays["indices"], in_lead=arrays["in_lead"],
                     facts=FactTable(table, arrays["in_lead"]))


def cached_fact_graph(out: str | Path, graph_run: str, n_nodes: int, build: Callable[[], FactGraph]) -> FactGraph:
    """The fact graph of ``graph_run`` from its cache, or ``build()`` written there first (a cache
    that cannot be read is named in the log and rebuilt)."""
    return cache.cached(fact_cache_dir(out, graph_run), lambda p: load_fact_graph(p, n_nodes), build, save_fact_graph)
