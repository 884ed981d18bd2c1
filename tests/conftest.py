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
def enwiki233_graph(request, tmp_path_factory) -> Path:
    """enwiki-233 through the graph stage, cached across sessions in .pytest_cache.

    The cache key is the dump's bytes plus the source of the graph stage, the stage contract and
    storage, so a change to any of them re-ingests. Tests copy this directory before writing to it.
    """
    import hashlib

    import hopforge
    from hopforge.config import load_config
    from hopforge.graph import run_ingest
    from hopforge.stage import resolve

    dump = (REPO / ".." / "shared" / "wiki" / "enwiki-233.xml.bz2").resolve()
    if not dump.exists():
        pytest.skip(f"{dump} not found: the shared Wikipedia fixtures live in ../shared/wiki beside the repo")
    h = hashlib.sha256(dump.read_bytes())
    src = Path(hopforge.__file__).parent
    for f in sorted([*(src / "graph").glob("*.py"), *(src / "storage").glob("*.py"), src / "stage.py"]):
        h.update(f.read_bytes())
    cache = getattr(request.config, "cache", None)
    base = Path(cache.mkdir(f"hopforge-enwiki233-{h.hexdigest()[:12]}")) if cache else tmp_path_factory.mktemp("g")
    out = base / "data"
    cfg = load_config(None, {"run.out": str(out), "graph.dump": str(dump), "graph.workers": 1})
    if resolve(cfg, "graph").complete() is None:
        run_ingest(cfg)
    return out


@pytest.fixture(scope="session")
def scale_dump(tmp_path_factory) -> Path:
    """A 3,000-page multistream dump (and its index) grown from enwiki-233 by the scale generator."""
    from hopforge.testing.scaledump import generate

    source = wiki_file("enwiki-233.xml.bz2")
    return generate(3000, tmp_path_factory.mktemp("scale"), source=source, seed=0, workers=2).dump


@pytest.fixture(scope="session")
def scale_single(scale_dump, tmp_path_factory) -> Path:
    """The scale generator's 3,000-page multistream dump ingested by one process, in 8 batches of
    stream ranges (8 page shards): what the Dask and Ray runs of the same dump must equal."""
    from hopforge.config import load_config
    from hopforge.graph import plan_ingest, run_ingest

    cfg = load_config(None, {"run.out": str(tmp_path_factory.mktemp("single") / "out"),
                             "graph.dump": str(scale_dump), "graph.workers": 1, "graph.batch_pages": 400})
    batches = plan_ingest(cfg)
    assert {b.kind for b in batches} == {"multistream"} and len(batches) == 8  # 30 streams, 4 per batch
    run_ingest(cfg)
    return cfg.run.out
