"""Two ingests of different dumps in one OUT: a reader of one graph run sees that dump only.

enwiki-233 (2021) and enwiki-tiny-70 (2025) both hold "Abraham Lincoln" under page id 307, in
different revisions: a search environment or catalog that mixed the two partitions would return
the page twice (the same passage id twice) or the other dump's text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hopforge.config import Config, load_config
from hopforge.graph import run_ingest
from hopforge.rollouts.environment import Environment, paginate
from hopforge.stage import resolve, selection_for
from hopforge.storage import query_arrow, read_table
from tests.conftest import wiki_file

LINCOLN = "Abraham Lincoln"


@pytest.fixture(scope="module")
def two_dumps(tmp_path_factory) -> tuple[Path, dict[str, Config]]:
    out = tmp_path_factory.mktemp("two-dumps")
    cfgs = {}
    for name, workers in (("enwiki-233", 2), ("enwiki-tiny-70", 1)):
        cfgs[name] = load_config(None, {"run.out": str(out), "graph.dump": str(wiki_file(f"{name}.xml.bz2")),
                                        "graph.workers": workers, "graph.batch_pages": 128})
        run_ingest(cfgs[name])
    return out, cfgs


def _pages(out: Path, run: str) -> dict[str, dict]:
    rows = read_table(out, "pages", run=run, columns=["page_id", "title", "text", "revision_id"]).to_pylist()
    return {r["title"]: r for r in rows}


@pytest.mark.parametrize("dump", ["enwiki-233", "enwiki-tiny-70"])
def test_environment_of_one_graph_run_holds_only_that_dump(two_dumps, dump):
    out, cfgs = two_dumps
    run = resolve(cfgs[dump], "graph").fingerprint
    other = next(resolve(c, "graph").fingerprint for n, c in cfgs.items() if n != dump)
    assert run != other
    mine, theirs = _pages(out, run), _pages(out, other)
    assert mine[LINCOLN]["page_id"] == theirs[LINCOLN]["page_id"] == 307
    assert mine[LINCOLN]["text"] != theirs[LINCOLN]["text"]

    env = Environment.from_tables(out, run=run)
    assert sorted(env.titles) == sorted(mine) and len(env.titles) == len(set(env.titles))
    hits = env.search("Abraham Lincoln president", k=10)
    ids = [h.passage_id for h in hits]
    assert len(ids) == len(set(ids)), ids
    assert [h.title for h in hits].count(LINCOLN) == 1
    assert {h.title for h in hits} <= set(mine)
    # The page a visit shows is this dump's revision, not the other's.
    assert env.pages_of(LINCOLN) == paginate(mine[LINCOLN]["text"], env.page_chars)


def test_environment_without_a_run_reads_the_latest_graph_only(two_dumps):
    out, cfgs = two_dumps
    latest = _pages(out, resolve(cfgs["enwiki-tiny-70"], "graph").fingerprint)  # ingested last
    env = Environment.from_tables(out)
    assert sorted(env.titles) == sorted(latest)
    assert env.pages_of(LINCOLN) == paginate(latest[LINCOLN]["text"], env.page_chars)


def test_catalog_over_one_graph_run_counts_only_that_dump(two_dumps):
    out, cfgs = two_dumps
    expected = {"enwiki-233": 233, "enwiki-tiny-70": 6}
    for name, cfg in cfgs.items():
        sel = selection_for(resolve(cfg, "graph"))
        assert query_arrow(out, "SELECT count(*) AS n FROM pages", selection=sel).to_pylist() == [
            {"n": expected[name]}]
        lincoln = query_arrow(out, f"SELECT count(*) AS n FROM pages WHERE title = '{LINCOLN}'", selection=sel)
        assert lincoln.to_pylist() == [{"n": 1}]
        assert query_arrow(out, "SELECT DISTINCT source FROM pages", selection=sel).to_pylist() == [
            {"source": f"{name}.xml.bz2"}]
    # Both partitions are there: only the selection keeps them apart.
    assert query_arrow(out, "SELECT count(*) AS n FROM pages_all").to_pylist() == [{"n": 239}]
