"""The question stage's dump-wide structures (page rows, clue index, fact graph) are built once per
graph run and memory-mapped from ``OUT/_cache`` after that; a damaged cache is named and rebuilt."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hopforge.errors import StorageError
from hopforge.storage.arrays import latest_run
from hopforge.synth import clue_index, factgraph, page_rows
from hopforge.synth.clue_index import ClueIndex
from hopforge.synth.clues import page_clues
from hopforge.synth.graph_view import GraphView, _dataset


@pytest.fixture(scope="module")
def enwiki(enwiki233_graph: Path, tmp_path_factory) -> tuple[Path, GraphView, dict, factgraph.FactGraph]:
    """A copy of enwiki-233's graph output (tests write its caches), its page rows as the graph view
    reads them, and its fact graph built in memory."""
    out = tmp_path_factory.mktemp("caches") / "out"
    shutil.copytree(enwiki233_graph, out, ignore=shutil.ignore_patterns("_cache"))
    view = GraphView.load(out, latest_run(out, "graph"))
    pages = view.pages(int(p) for p in view.page_id)
    links = _dataset(view.out, "links", view.run)
    built = factgraph.build_fact_graph(view.n_nodes, view.node_of_page, view.titles, links, pages)
    assert built.n_edges > 100 and len(pages) == view.n_nodes
    return out, view, pages, built


@pytest.fixture
def fresh(enwiki):
    shutil.rmtree(enwiki[0] / "_cache", ignore_errors=True)
    return enwiki


def _same_facts(a: factgraph.FactGraph, b: factgraph.FactGraph) -> None:
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.in_lead, b.in_lead)
    assert len(a.facts) == len(b.facts) and list(a.facts) == list(b.facts)


def _never(*_: object):
    raise AssertionError("the cache was there: nothing should be built")


def test_cached_fact_graph_is_the_built_one_and_is_built_once(fresh) -> None:
    out, view, _, built = fresh
    calls = []
    first = factgraph.cached_fact_graph(out, view.run, view.n_nodes, lambda: calls.append(1) or built)
    again = factgraph.cached_fact_graph(out, view.run, view.n_nodes, _never)
    assert calls == [1]
    _same_facts(first, built)
    _same_facts(again, built)
    # Memory-mapped, not loaded: the arrays are views of the files, the facts rows read on demand.
    assert isinstance(again.indices, np.memmap) and not again.indices.flags.writeable
    assert isinstance(again.facts, factgraph.FactTable)
    assert again.facts[-1] == built.facts[-1] and again.facts[2:5] == built.facts[2:5]
    with pytest.raises(IndexError, match="out of range"):
        again.facts[len(built.facts)]
    # One directory per graph run: no temporary leftovers beside it.
    assert [p.name for p in (out / "_cache").iterdir()] == [factgraph.fact_cache_dir(out, view.run).name]


def test_cached_page_rows_are_the_pages_table_by_id(fresh, monkeypatch) -> None:
    out, view, pages, _ = fresh
    rows = page_rows.page_rows(out, view.run)
    assert len(rows) == len(pages) and sorted(rows) == sorted(pages)
    for pid, row in pages.items():
        assert rows.get(pid) == row and rows[pid] == row
    assert rows.get(-1) is None and rows.get(-1, {}) == {}
    with pytest.raises(KeyError):
        rows[-1]
    assert sorted(r["page_id"] for chunk in rows.chunks(50) for r in chunk) == sorted(pages)
    assert isinstance(rows._ids, np.memmap)
    monkeypatch.setattr(page_rows, "_save", _never)
    first = next(iter(pages))
    assert page_rows.page_rows(out, view.run)[first] == pages[first]


def test_cached_clue_index_equals_the_in_memory_one(fresh) -> None:
    out, view, pages, _ = fresh
    node_pages = [(i, dict(pages[int(p)])) for i, p in enumerate(view.page_id)]
    memory = ClueIndex.from_pages(view.n_nodes, node_pages)
    disk = clue_index.cached_clue_index(out, view.run, view.n_nodes, lambda: memory)
    again = clue_index.cached_clue_index(out, view.run, view.n_nodes, _never)
    keys_of = [{c.key for c in page_clues(p)} for _, p in node_pages]
    keys = set().union(*keys_of)
    assert len(keys) == len(memory) == len(again) > 500
    fits = {key: [i for i, ks in enumerate(keys_of) if key in ks] for key in keys}
    for key, want in fits.items():
        assert memory.nodes(key).tolist() == disk.nodes(key).tolist() == again.nodes(key).tolist() == want
        assert again.count(key) == len(want)
    assert again.count("noun:no such clue") == 0 and again.nodes("noun:no such clue").tolist() == []
    for min_pages in (1, 2, 10):  # as the question stage computed it per page before
        old = np.array([any(len(fits[k]) >= min_pages for k in ks) for ks in keys_of])
        assert np.array_equal(again.nodes_with_a_clue(min_pages), old)


def test_keys_whose_hashes_collide_are_told_apart(monkeypatch) -> None:
    monkeypatch.setattr(clue_index, "key_hash", lambda key: 7)  # every key collides
    index = ClueIndex.build(4, [(0, ["a", "b"]), (1, ["b"]), (3, ["c", "a"]), (2, ["b"]), (1, ["b"])])
    assert [index.nodes(k).tolist() for k in "abcd"] == [[0, 3], [0, 1, 2], [3], []]
    assert index.nodes_with_a_clue(3).tolist() == [True, True, True, False]
    monkeypatch.setattr(clue_index, "MEMO_KEYS", 2)  # look-ups remembered, and forgotten past the cap
    index._slots.clear()
    for _ in range(3):
        assert [index.count(k) for k in "dcba"] == [0, 1, 3, 2] and len(index._slots) <= 2


def _tiny_clues(view: GraphView) -> ClueIndex:
    return ClueIndex.build(view.n_nodes, [(0, ["noun:x"]), (2, ["noun:x"])])


CACHES = {
    "facts": lambda out, view, built: factgraph.cached_fact_graph(out, view.run, view.n_nodes, lambda: built),
    "clues": lambda out, view, built: clue_index.cached_clue_index(out, view.run, view.n_nodes,
                                                              lambda: _tiny_clues(view)),
    "pages": lambda out, view, built: page_rows.page_rows(out, view.run),
}
DIRS = {"facts": factgraph.fact_cache_dir, "clues": clue_index.clue_cache_dir, "pages": page_rows.pages_cache_dir}


def _load(kind: str, path: Path, view: GraphView) -> object:
    return {"facts": lambda: factgraph.load_fact_graph(path, view.n_nodes),
            "clues": lambda: clue_index.load_clue_index(path, view.n_nodes),
            "pages": lambda: page_rows._load(path)}[kind]()


@pytest.mark.parametrize("kind", sorted(CACHES))
@pytest.mark.parametrize("damage", ["truncated .arrow", "missing .npy", "meta.json of another graph",
                                    "half-written (no meta.json)"])
def test_a_damaged_cache_is_named_and_rebuilt(fresh, kind: str, damage: str, caplog) -> None:
    out, view, _, built = fresh
    CACHES[kind](out, view, built)
    path = DIRS[kind](out, view.run)
    if damage == "truncated .arrow":
        arrow = next(path.glob("*.arrow"))
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    elif damage == "missing .npy":
        next(path.glob("*.npy")).unlink()
    elif damage == "meta.json of another graph":
        (path / "meta.json").write_text('{"format": 1, "n_nodes": 3, "n_edges": 2, "rows": 5, "keys": 1}')
    else:
        (path / "meta.json").unlink()
    with pytest.raises(StorageError, match=f"{kind} cache {path} is (unreadable|inconsistent)"):
        _load(kind, path, view)
    with caplog.at_level(logging.WARNING, logger="hopforge.synth.cache"):
        rebuilt = CACHES[kind](out, view, built)
    if kind == "facts":
        _same_facts(rebuilt, built)
    elif kind == "clues":
        assert rebuilt.nodes("noun:x").tolist() == [0, 2]
    else:
        assert len(rebuilt) == view.n_nodes
    if damage != "half-written (no meta.json)":
        assert f"{kind} cache {path}" in caplog.text and "rebuilding it" in caplog.text
    assert (path / "meta.json").exists() and [p.name for p in (out / "_cache").iterdir()] == [path.name]


def test_the_keys_follow_the_shards_and_the_code_that_reads_them(enwiki, monkeypatch, tmp_path) -> None:
    out, view, _, _ = enwiki
    keys = {kind: d(out, view.run) for kind, d in DIRS.items()}
    assert {kind: d(out, view.run) for kind, d in DIRS.items()} == keys  # stable
    assert all(d(out, "graph-another-run") != keys[kind] for kind, d in DIRS.items())
    assert len({p.name for p in keys.values()}) == 3
    # The relation lexicon changed (a new source file): new facts, the same clues and pages.
    lexicon = tmp_path / "relations.py"
    lexicon.write_bytes(Path(factgraph.relations.__file__).read_bytes() + b"\n# one more relation\n")
    monkeypatch.setattr(factgraph.relations, "__file__", str(lexicon))
    assert factgraph.fact_cache_dir(out, view.run) != keys["facts"]
    assert clue_index.clue_cache_dir(out, view.run) == keys["clues"]


def test_the_fact_build_spills_to_disk_and_leaves_nothing_behind(enwiki, tmp_path) -> None:
    out, view, pages, built = enwiki
    spill = tmp_path / "spill"
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = [spill / f"hopforge-facts-{host}-{dead.stdout.strip()}-abc",  # a SIGKILLed build of this host
            spill / f"hopforge-facts-{host}-{os.getpid()}-live",  # a build still running here
            spill / "hopforge-facts-otherhost-1-xyz"]  # another host's: its pids are not ours to judge
    for d in left:
        (d / "links-0.arrow").parent.mkdir(parents=True)
        (d / "links-0.arrow").write_bytes(b"x" * 10)
    links = _dataset(view.out, "links", view.run)
    graph = factgraph.build_fact_graph(view.n_nodes, view.node_of_page, view.titles, links, pages, spill_dir=spill)
    _same_facts(graph, built)
    mine = [d for d in spill.iterdir() if d not in left]
    assert not left[0].exists() and left[1].exists() and left[2].exists() and len(mine) == 1
    assert {p.name for p in mine[0].iterdir()} >= {"facts.arrow", "forward.arrow"}
    del graph
    gc.collect()
    assert not mine[0].exists()

    class Broken(dict):
        def get(self, key, default=None):
            raise RuntimeError("page store gone")

    with pytest.raises(RuntimeError, match="page store gone"):
        factgraph.build_fact_graph(view.n_nodes, view.node_of_page, view.titles, links, Broken(), spill_dir=spill)
    assert sorted(spill.iterdir()) == sorted(left[1:])
