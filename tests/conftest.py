"""Shared fixtures: the real dumps in ../shared/wiki (skipped with a clear message where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WIKI = (REPO / ".." / "shared" / "wiki").resolve()


def wiki_file(name: str) -> Path:
    path = WIKI / name
    if not path.exists():
        pytest.skip(f"{path} not found: the shared Wikipedia fixtures live in ../shared/wiki beside the repo")
    return path


@pytest.fixture
def enwiki_233() -> Path:
    return wiki_file("enwiki-233.xml.bz2")


@pytest.fixture
def enwiki_tiny_70() -> Path:
    return wiki_file("enwiki-tiny-70.xml.bz2")


@pytest.fixture
def ltgwiki_tiny_8() -> Path:
    return wiki_file("ltgwiki-tiny-8.xml.bz2")


@pytest.fixture(scope="session")
def enwiki233_graph(request) -> Path:
    """enwiki-233 ingested by the graph stage, cached across sessions in .pytest_cache.

    The cache key is the dump's bytes plus the graph stage's source, so a change
    to the graph code re-ingests. Tests copy this directory before writing to it.
    """
    import hashlib

    dump = Path(__file__).resolve().parents[1] / ".." / "shared" / "wiki" / "enwiki-233.xml.bz2"
    if not dump.exists():
        pytest.skip(f"{dump} not found: the shared Wikipedia fixtures live in ../shared/wiki beside the repo")
    graph_mod = pytest.importorskip("hopforge.graph", reason="the graph stage (branch graph) is not merged")
    h = hashlib.sha256(dump.read_bytes())
    for src in sorted(Path(graph_mod.__file__).parent.glob("*.py")):
        h.update(src.read_bytes())
    out = Path(request.config.cache.mkdir(f"hopforge-enwiki233-{h.hexdigest()[:12]}")) / "data"
    from hopforge.storage.arrays import latest_run

    if latest_run(out, "graph") is None:
        cfg = __import__('hopforge.config', fromlist=['load_config']).load_config(None, {"run.out": str(out), "graph.dump": str(dump), "graph.workers": 1})
        graph_mod.run_ingest(cfg)
    return out
