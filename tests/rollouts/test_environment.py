from __future__ import annotations

from pathlib import Path

import pytest

from hopforge.errors import StorageError
from hopforge.rollouts.environment import Environment, paginate
from hopforge.stage import resolve
from hopforge.storage import read_table
from hopforge.testing.stages import complete_stage
from hopforge.text.titles import normalize_title
from tests.rollouts.rollout_fixtures import PAGES, rollout_cfg, write_wiki


def test_search_ranks_the_passage_that_names_the_entity(wiki: Path) -> None:
    env = Environment.from_tables(wiki)
    hits = env.search("who founded Ostra Optics", k=3)
    assert hits[0].title in {"Ostra Optics", "Hanne Lind"}
    top = {h.title: h for h in hits}
    assert top["Ostra Optics"].passage_id == "4:1"  # page 4, paragraph 1: "founded in 1921 by Hanne Lind"
    assert "Hanne Lind" in top["Ostra Optics"].snippet
    assert len({h.title for h in hits}) == len(hits)  # one passage per page


def test_search_unknown_words_and_stopwords_only(wiki: Path) -> None:
    env = Environment.from_tables(wiki)
    assert env.search("zzqx unknownword") == []
    assert env.search("the of and") == []
    assert "No results" in env.render_search("zzqx", 5)


def test_visit_resolves_redirects_case_and_underscores(wiki: Path) -> None:
    env = Environment.from_tables(wiki)
    assert env.resolve("Sella") == "Sella (river)"  # redirect
    assert env.resolve("sella_(river)") == "Sella (river)"  # normalised
    assert env.resolve("HANNE LIND") == "Hanne Lind"  # case-insensitive fallback
    obs = env.render_visit("Capital of Veloria")
    assert obs.startswith("Page: Marren (redirected from 'Capital of Veloria')")
    assert "river Sella" in obs


def test_visit_missing_page_and_out_of_range_page_are_clear_observations(wiki: Path) -> None:
    env = Environment.from_tables(wiki, page_chars=300)
    assert "No page titled 'Atlantis'" in env.render_visit("Atlantis")
    pages = env.pages_of("Long page")
    assert len(pages) > 5 and all(len(p) <= 300 for p in pages)
    assert f"has pages 0 to {len(pages) - 1}; page 99 does not exist" in env.render_visit("Long page", 99)
    assert "page=2" in env.render_visit("Long page", 1)  # tells the model how to read on


def test_paginate_cuts_at_boundaries_and_keeps_all_text() -> None:
    text = "\n\n".join("word " * 30 for _ in range(10)).strip()
    pages = paginate(text, 200)
    assert all(len(p) <= 200 for p in pages)
    assert " ".join(" ".join(pages).split()) == " ".join(text.split())
    assert paginate("", 100) == [""]
    assert normalize_title("foo_bar  baz") == "Foo bar baz"


def test_index_is_cached_under_out_and_rebuilt_when_pages_change(wiki: Path) -> None:
    Environment.from_tables(wiki)
    caches = list((wiki / "_cache").iterdir())
    assert len(caches) == 1 and (caches[0] / "done").exists()
    env = Environment.from_tables(wiki)  # loaded from the cache
    assert env.search("Quillon camera")[0].title == "Ostra Optics"
    write_wiki(wiki, cfg=rollout_cfg(wiki, **{"run.run_id": "second"}))  # another graph run => new key
    Environment.from_tables(wiki)
    assert len(list((wiki / "_cache").iterdir())) == 2


def test_from_tables_reads_one_graph_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = resolve(write_wiki(out), "graph").fingerprint
    cfg = rollout_cfg(out, **{"run.run_id": "second", "graph.dump": "other-wiki.xml"})
    second = resolve(cfg, "graph").fingerprint
    complete_stage(cfg, "graph", {"pages": [{"page_id": 1, "title": "Veloria", "ns": 0, "lead": "",
                                             "text": "Veloria is a moon of the planet Tarsis, nothing more."}]})
    assert read_table(out, "pages").num_rows == len(PAGES) + 1  # both runs in one table
    env = Environment.from_tables(out, second)
    assert env.titles == ["Veloria"] and env.num_passages == 1  # no duplicate passage from the other run
    assert "moon of the planet Tarsis" in env.render_visit("Veloria")
    assert len(Environment.from_tables(out, first).titles) == len(PAGES)
    assert "capital of Veloria is Marren" in Environment.from_tables(out, first).render_visit("Veloria")
    # Without a run: the latest complete graph run.
    assert Environment.from_tables(out).titles == ["Veloria"]


def test_no_pages_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no pages under"):
        Environment.from_tables(tmp_path)
