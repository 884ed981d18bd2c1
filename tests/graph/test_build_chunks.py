"""build_graph in chunks: tiny chunks build the same tables and CSR as one chunk; a crash between
chunk writes leaves no partial ``links`` and the re-run completes with identical tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hopforge.graph import build as build_mod
from hopforge.graph import run_ingest
from hopforge.stage import resolve
from hopforge.storage import read_manifest, read_table, runs_of
from hopforge.storage.arrays import load_arrays
from hopforge.storage.shards import GroupWriter
from hopforge.testing.stages import ingested_copy

from .conftest import make_cfg, page_xml, wiki_file, write_dump

KEYS = {"links": ["src_id", "position"], "nodes": ["node"], "redirects": ["title"], "rejects": ["row_id"]}


def _ingested_copy(src: Path, dest: Path) -> Path:
    return ingested_copy(src, dest)


def _cfg(out: Path):
    return make_cfg(out, wiki_file("enwiki-233.xml.bz2"), **{"graph.workers": 1})


def _tables(out: Path) -> dict:
    tables = {t: read_table(out, t).sort_by([(k, "ascending") for k in keys]).to_pylist() for t, keys in KEYS.items()}
    arrays, meta = load_arrays(out, "graph", runs_of(out, "nodes")[0])
    return {**tables, "arrays": {k: np.asarray(v) for k, v in arrays.items()}, "meta": meta}


def _assert_same(a: dict, b: dict) -> None:
    for t in KEYS:
        assert a[t] == b[t], t
    assert a["arrays"].keys() == b["arrays"].keys()
    for k, v in a["arrays"].items():
        assert v.dtype == b["arrays"][k].dtype and np.array_equal(v, b["arrays"][k]), k
    assert a["meta"] == b["meta"]


def _links_shards(out: Path) -> int:
    return len([e for e in read_manifest(out, "links") if e.batch == "build_graph"])


def _no_build_output(out: Path) -> None:
    for t in ("links", "nodes", "redirects"):
        assert read_table(out, t).num_rows == 0 and read_manifest(out, t) == [], t
    assert not [e for e in read_manifest(out, "rejects") if e.batch == "build_graph"]
    assert not (out / "links").exists() or not list((out / "links").rglob("part-*.parquet"))
    journal = out / "_journal"
    assert not journal.exists() or not [p for p in journal.iterdir() if p.suffix == ".json"]


@pytest.fixture(scope="module")
def one_chunk(enwiki233_graph, tmp_path_factory) -> dict:
    """enwiki-233's graph built from its ingest tables in one chunk."""
    out = _ingested_copy(enwiki233_graph, tmp_path_factory.mktemp("one") / "out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build_mod, "LINK_CHUNK_ROWS", 10**9)
        run_ingest(_cfg(out))
    assert _links_shards(out) == 1
    return _tables(out)


def test_tiny_chunks_build_the_same_tables_and_csr_as_one_chunk(enwiki233_graph, one_chunk, tmp_path, monkeypatch):
    ref = one_chunk
    _assert_same(_tables(enwiki233_graph), ref)  # the default chunk size (several chunks on enwiki-233)
    out = _ingested_copy(enwiki233_graph, tmp_path / "small")
    monkeypatch.setattr(build_mod, "LINK_CHUNK_ROWS", 997)
    stats = run_ingest(_cfg(out))
    assert _links_shards(out) > 50
    _assert_same(_tables(out), ref)
    assert stats.links == len(ref["links"]) and stats.edges == ref["meta"]["n_edges"]


def test_crash_between_chunk_writes_leaves_no_links_and_the_rerun_builds_the_same(enwiki233_graph, one_chunk,
                                                                                    tmp_path, monkeypatch):
    ref = one_chunk
    out = _ingested_copy(enwiki233_graph, tmp_path / "crashy")
    monkeypatch.setattr(build_mod, "LINK_CHUNK_ROWS", 5000)
    real, adds = GroupWriter.add, []

    def crash_after_second_chunk(self, table, data, **kw):
        if table == "links":
            adds.append(1)
            if len(adds) == 3:
                raise RuntimeError("killed between chunk writes")
        return real(self, table, data, **kw)

    monkeypatch.setattr(GroupWriter, "add", crash_after_second_chunk)
    with pytest.raises(RuntimeError, match="killed between chunk writes"):
        run_ingest(_cfg(out))
    _no_build_output(out)
    assert not list(out.rglob(".tmp-*"))  # the two chunks written are dropped with the group
    assert resolve(_cfg(out), "graph").complete() is None
    monkeypatch.setattr(GroupWriter, "add", real)
    run_ingest(_cfg(out))
    _assert_same(_tables(out), ref)


KILL_SCRIPT = r"""
import os, signal, sys
from hopforge.config import load_config
from hopforge.graph import build, run_ingest
from hopforge.storage.shards import GroupWriter
from hopforge.testing.stages import ingested_copy
out, dump = sys.argv[1], sys.argv[2]
build.LINK_CHUNK_ROWS = 5000
real, adds = GroupWriter.add, []
def add(self, table, data, **kw):
    if table == "links":
        adds.append(1)
        if len(adds) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(self, table, data, **kw)
GroupWriter.add = add
run_ingest(load_config(None, {"run.out": out, "graph.dump": dump, "graph.workers": 1}))
"""


def test_sigkill_between_chunk_writes_leaves_no_links_and_the_rerun_builds_the_same(enwiki233_graph, one_chunk,
                                                                                      tmp_path):
    ref = one_chunk
    out = _ingested_copy(enwiki233_graph, tmp_path / "killed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), str(wiki_file("enwiki-233.xml.bz2"))],
                          check=False, env=env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _no_build_output(out)
    assert len(list((out / "links").rglob(".tmp-*"))) == 2  # the two chunks written: hidden, unrecorded
    run_ingest(_cfg(out))  # recover() drops the dead writer's temps; the build runs again
    assert not list(out.rglob(".tmp-*"))
    _assert_same(_tables(out), ref)


def test_a_page_listed_in_two_batches_keeps_its_first_links_across_chunks(tmp_path, monkeypatch):
    """The same page in two ingest batches: its (src_id, position) keys repeat in two chunks; the
    first wins, as in one chunk."""
    pages = (page_xml(1, "Paris", "Paris is in [[France]] near [[Lyon]] and [[Nice]].")
             + page_xml(2, "France", "France has [[Paris]] and [[Lyon]].")
             + page_xml(3, "Lyon", "Lyon is in [[France]].")
             + page_xml(1, "Paris", "Paris, again: [[Lyon]] then [[France]] then [[Nice]] and [[Lyon]].")
             + page_xml(4, "Nice", "Nice is in [[France]], not [[Paris]]."))
    dump = write_dump(tmp_path / "d.xml", pages)
    opts = {"graph.workers": 1, "graph.batch_pages": 2}
    one = make_cfg(tmp_path / "one", dump, **opts)
    run_ingest(one)
    monkeypatch.setattr(build_mod, "LINK_CHUNK_ROWS", 2)
    small = make_cfg(tmp_path / "small", dump, **opts)
    run_ingest(small)
    assert _links_shards(Path(small.run.out)) > 3
    assert build_mod._repeated_sources(resolve(small, "graph")).tolist() == [1]
    a, b = _tables(Path(one.run.out)), _tables(Path(small.run.out))
    _assert_same(a, b)
    paris = [(r["position"], r["dst_title"]) for r in a["links"] if r["src_id"] == 1]
    assert len(paris) == len({p for p, _ in paris})  # one row per (src_id, position)
