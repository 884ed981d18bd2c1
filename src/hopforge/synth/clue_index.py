"""The clue index: every clue key of the dump and the nodes whose pages satisfy it (see
:mod:`hopforge.synth.clues` for what a clue is), columnar so that it is built once per graph run and
memory-mapped from ``OUT/_cache/clues-<key>/`` by every process after that (:mod:`hopforge.synth.cache`).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hopforge.synth import cache, clues, describe
from hopforge.synth.clues import page_clues

MEMO_KEYS = 1 << 20  # look-ups remembered per process before the memo starts over


def key_hash(key: str) -> int:
    """The 64-bit hash a :class:`ClueIndex` sorts its keys by."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class ClueIndex:
    """Clue key -> the nodes whose pages satisfy it, over every page of the graph.

    Columnar, so that it can be memory-mapped from the graph run's cache (:func:`cached_clue_index`)
    instead of being rebuilt per process: keys sorted by :func:`key_hash` (``hashes``, ``keys``) and
    per key its sorted nodes, CSR style (``indptr``, ``nodes``). A look-up is a binary search.
    """

    def __init__(self, n_nodes: int, hashes: np.ndarray, keys: pa.Array | pa.ChunkedArray, indptr: np.ndarray,
                 nodes: np.ndarray) -> None:
        self.n_nodes = n_nodes
        self.hashes, self.keys, self.indptr, self._nodes = hashes, keys, indptr, nodes
        self._empty = np.zeros(0, np.int32)
        self._slots: dict[str, int | None] = {}  # keys looked up: the certificate asks for the same ones often

    @classmethod
    def build(cls, n_nodes: int, keys_by_node: Iterable[tuple[int, Iterable[str]]]) -> ClueIndex:
        key_id: dict[str, int] = {}
        kid, node = array("q"), array("i")  # 12 bytes a (key, node) pair, not a Python int each
        for n, keys in keys_by_node:
            for k in keys:
                kid.append(key_id.setdefault(k, len(key_id)))
                node.append(n)
        kids, nodes = np.frombuffer(kid, np.int64), np.frombuffer(node, np.int32)
        order = np.lexsort((nodes, kids))
        kids, nodes = kids[order], nodes[order]
        keep = np.r_[True, (kids[1:] != kids[:-1]) | (nodes[1:] != nodes[:-1])] if len(kids) else np.zeros(0, bool)
        kids, nodes = kids[keep], nodes[keep]
        names = list(key_id)
        counts = np.bincount(kids, minlength=len(names)).astype(np.int64)
        starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64) if len(names) else np.zeros(0, np.int64)
        hashes = np.fromiter((key_hash(k) for k in names), np.uint64, len(names))
        korder = np.lexsort((np.arange(len(names)), hashes))
        new_counts = counts[korder]
        indptr = np.zeros(len(names) + 1, np.int64)
        np.cumsum(new_counts, out=indptr[1:])
        offs = np.repeat(starts[korder] - indptr[:-1], new_counts) + np.arange(int(indptr[-1]), dtype=np.int64)
        return cls(n_nodes, hashes[korder], pa.array([names[k] for k in korder], pa.string()), indptr,
                   nodes[offs].astype(np.int32))

    @classmethod
    def from_pages(cls, n_nodes: int, node_pages: Iterable[tuple[int, dict[str, Any]]]) -> ClueIndex:
        return cls.build(n_nodes, ((node, [c.key for c in page_clues(page)]) for node, page in node_pages))

    def __len__(self) -> int:
        return len(self.hashes)

    def _slot(self, key: str) -> int | None:
        if key in self._slots:
            return self._slots[key]
        if len(self._slots) >= MEMO_KEYS:
            self._slots.clear()
        h = np.uint64(key_hash(key))
        j = int(np.searchsorted(self.hashes, h))
        slot = None
        while j < len(self.hashes) and self.hashes[j] == h:
            if self.keys[j].as_py() == key:
                slot = j
                break
            j += 1
        self._slots[key] = slot
        return slot

    def nodes(self, key: str) -> np.ndarray:
        j = self._slot(key)
        return self._empty if j is None else self._nodes[self.indptr[j]:self.indptr[j + 1]]

    def count(self, key: str) -> int:
        j = self._slot(key)
        return 0 if j is None else int(self.indptr[j + 1] - self.indptr[j])

    def nodes_with_a_clue(self, min_pages: int) -> np.ndarray:
        """Per node: whether one of its page's clues fits at least ``min_pages`` pages."""
        counts = np.diff(self.indptr)
        out = np.zeros(self.n_nodes, bool)
        out[self._nodes[np.repeat(counts >= min_pages, counts)]] = True
        return out


# ---------------------------------------------------------------------------- the on-disk cache

CACHE_FORMAT = 1
_ARRAYS = ("hashes", "indptr", "nodes")


def clue_cache_dir(out: str | Path, graph_run: str) -> Path:
    """Where graph run ``graph_run``'s clue index is cached: keyed by its ``pages`` shards, the source
    of the rules that read clues from a page (:mod:`hopforge.synth.clues` and what it uses of
    :mod:`hopforge.synth.describe`) and :data:`CACHE_FORMAT`, which a change of this module's file
    layout must bump."""
    return cache.cache_dir(out, graph_run, "clues", ("pages",), (clues, describe), CACHE_FORMAT)


def save_clue_index(index: ClueIndex, path: Path) -> None:
    cache.write_atomically(path, {"hashes": index.hashes, "indptr": index.indptr, "nodes": index._nodes},
                           {"keys": pa.table({"key": index.keys})},
                           {"format": CACHE_FORMAT, "n_nodes": index.n_nodes, "keys": len(index),
                            "pairs": int(index.indptr[-1])})


def load_clue_index(path: Path, n_nodes: int) -> ClueIndex:
    """The cached clue index at ``path``, memory-mapped; :class:`StorageError` naming the directory
    if a part is missing, unreadable or does not fit the rest."""
    meta, arrays, tables = cache.read_dir(path, _ARRAYS, ("keys",))
    keys, n_keys, pairs = tables["keys"], meta.get("keys"), meta.get("pairs")
    problems = []
    if meta.get("format") != CACHE_FORMAT or meta.get("n_nodes") != n_nodes:
        problems.append(f"meta.json says {meta}, expected format {CACHE_FORMAT} over {n_nodes} nodes")
    for name, got, want in (("hashes.npy", len(arrays["hashes"]), n_keys), ("keys.arrow", keys.num_rows, n_keys),
                            ("indptr.npy", len(arrays["indptr"]), (n_keys or 0) + 1),
                            ("nodes.npy", len(arrays["nodes"]), pairs)):
        if got != want:
            problems.append(f"{name} has {got} rows, expected {want}")
    if not problems and int(arrays["indptr"][-1]) != pairs:
        problems.append(f"indptr.npy ends at {int(arrays['indptr'][-1])}, expected {pairs}")
    if keys.schema.names != ["key"]:
        problems.append(f"keys.arrow has columns {keys.schema.names}, expected ['key']")
    cache.inconsistent(path, problems)
    return ClueIndex(n_nodes, arrays["hashes"], keys.column("key"), arrays["indptr"], arrays["nodes"])


def cached_clue_index(out: str | Path, graph_run: str, n_nodes: int, build: Callable[[], ClueIndex]) -> ClueIndex:
    """The clue index of ``graph_run`` from its cache, or ``build()`` written there first."""
    return cache.cached(clue_cache_dir(out, graph_run), lambda p: load_clue_index(p, n_nodes), build, save_clue_index)
