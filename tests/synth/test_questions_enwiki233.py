"""The question stage on the real enwiki-233 graph (ingested by the graph stage; cached per session).

200 template questions, seed 7, in the default run; the issue-15 run (1,000 questions) is marked slow.
Speed and the full quality figures are measured in benchmarks/question_quality.py (BENCHMARKS.md),
never asserted here."""

from __future__ import annotations

import re
import shutil
from collections import Counter

import pytest

from hopforge.config import load_config
from hopforge.stage import resolve
from hopforge.storage import query_arrow, read_table
from hopforge.synth import run_questions
from hopforge.synth.checks import CHECK_NAMES
from hopforge.synth.clues import description_clues, page_clues
from hopforge.synth.compose import TemplateComposer
from hopforge.synth.leaks import find_leaks, walk_names
from hopforge.synth.questions import chains_from_paths, context, plan_chain

from .conftest import path_of


def _fresh(enwiki233_graph, tmp_path_factory, name):
    out = tmp_path_factory.mktemp(name) / "data"
    shutil.copytree(enwiki233_graph, out, ignore=shutil.ignore_patterns("walks", "questions", "rejects"))
    return out


def _cfg(out, **kw):
    """Seed 7, 1,000 questions (the issue's run); graph.dump as the enwiki233_graph fixture ingested it."""
    from tests.conftest import WIKI

    return load_config(None, {"run.out": str(out), "run.seed": 7, "synth.n_questions": 1000,
                              "graph.dump": str(WIKI / "enwiki-233.xml.bz2"), **kw})


@pytest.fixture(scope="module")
def two_hundred(enwiki233_graph, tmp_path_factory):
    out = _fresh(enwiki233_graph, tmp_path_factory, "q200")
    cfg = _cfg(out, **{"synth.n_questions": 200})
    stats = run_questions(cfg)
    return out, cfg, stats


@pytest.fixture(scope="module")
def ctx(enwiki233_graph, tmp_path_factory):
    cfg = _cfg(enwiki233_graph)
    return cfg, context(cfg, resolve(cfg, "graph").fingerprint)


def _assert_passed_meet_every_gate(rows):
    for q in (q for q in rows if q["passed"]):
        assert q["leaks"] == [] and q["candidates"] == 1 and q["candidate_witnesses"] == [q["answer"]]
        assert q["one_shot_rank"] is None or q["one_shot_rank"] > 5
        assert q["best_clue_rank"] is None or q["best_clue_rank"] > 1
        assert q["solvable"] and q["replay_turns"] <= 40 and all(s["action"] for s in q["reference_path"])
        assert all(c["candidates"] >= 5 for c in q["certificate"])  # each clue alone is under-informative
        assert not re.search(r"links|article|starts with|word", q["question"])  # facts, not hyperlinks or puzzles
        assert [r["hop"] for r in q["relations"]] == list(range(1, q["hops"] + 1))


def test_passed_questions_meet_every_gate_of_issue_15(two_hundred):
    out, _, stats = two_hundred
    rows = read_table(out, "questions").to_pylist()
    assert stats.questions == 200 and stats.passed == sum(q["passed"] for q in rows) > 0
    _assert_passed_meet_every_gate(rows)
    hops = Counter(q["hops"] for q in rows)
    assert set(hops) == {2, 3, 4, 5, 6}  # default hops_min..hops_max
    res = query_arrow(out, "select hops, count(*) as n from questions group by 1 order by 1").to_pylist()
    assert {r["hops"]: r["n"] for r in res} == dict(hops)


@pytest.mark.slow
def test_issue_15_run_thousand_template_questions_seed_7(enwiki233_graph, tmp_path_factory):
    out = _fresh(enwiki233_graph, tmp_path_factory, "q1000")
    stats = run_questions(_cfg(out))
    rows = read_table(out, "questions").to_pylist()
    assert stats.questions == 1000
    assert stats.passed >= 60  # measured 79 of 1,000 (BENCHMARKS.md); the link structure caps it near 270
    _assert_passed_meet_every_gate(rows)


def test_rows_carry_checks_and_rejects_name_every_failure(two_hundred):
    out, _, _ = two_hundred
    rows = read_table(out, "questions").to_pylist()
    for q in rows:
        assert [c["name"] for c in q["checks"]] == list(CHECK_NAMES) and all(c["detail"] for c in q["checks"])
        assert q["answer"] == q["path"][-1] and q["answer_aliases"][0] == q["answer"]
        assert q["passed"] == all(c["passed"] for c in q["checks"])
    failed = {(q["question_id"], c["name"]) for q in rows for c in q["checks"] if not c["passed"]}
    rejects = read_table(out, "rejects").to_pylist()
    assert {(r["row_id"], r["step"]) for r in rejects} == failed
    reasons = Counter(r["reason"] for r in rejects)
    # The new gates each reject something on this dump.
    assert {"unsolvable_offline", "ambiguous_answer", "one_shot_searchable"} <= set(reasons)
    assert "answer_leaked" not in reasons  # the template composer screens its clues with the same leak matcher


def test_same_seed_gives_identical_questions_however_batched(two_hundred, enwiki233_graph, tmp_path_factory):
    a, _, _ = two_hundred
    b = _fresh(enwiki233_graph, tmp_path_factory, "q200b")
    run_questions(_cfg(b, **{"synth.n_questions": 200, "synth.batch_size": 70}))
    for table, key in (("questions", "question_id"), ("walks", "walk_id")):
        ra = sorted(read_table(a, table).to_pylist(), key=lambda r: r[key])
        rb = sorted(read_table(b, table).to_pylist(), key=lambda r: r[key])
        assert ra == rb


def test_hand_checked_fact_beyonce_born_in_houston(ctx):
    _, ctx = ctx
    t = ctx.view.node_of_title
    fact = ctx.facts.facts[ctx.facts.edge(t["Beyoncé"], t["Houston"])]
    assert (fact.phrase, fact.source, fact.sentence) == ("was born in", "infobox:birth_place",
                                                          "birth_place: Houston, Texas, U.S.")
    assert ctx.facts.facts[ctx.facts.edge(t["Houston"], t["Beyoncé"])].phrase == "is the birthplace of"
    # "Under Pressure", a 1981 collaboration with Queen: Bowie "worked with" the band.
    assert ctx.facts.facts[ctx.facts.edge(t["David Bowie"], t["Queen (band)"])].phrase == "worked with"


def test_regression_platonism_never_describes_plato(ctx):
    # Issue 15: answer "Plato" described as "founder of Platonism". Plato's short description yields that
    # clue, but the leak matcher (derived form) keeps it out of any question about Plato.
    cfg, ctx = ctx
    plato = ctx.view.node_of_title["Plato"]
    page = ctx.all_pages[int(ctx.view.page_id[plato])]
    assert "a founder of Platonism" in [c.text for c in page_clues(page)]
    (chain,) = chains_from_paths(ctx, [path_of(ctx, ["Aristotle", "Plato"])], seed=7)
    assert "a founder of Platonism" not in [c.text for c in ctx.certifier.options(plato, page, chain.names)]
    plan_chain(cfg, ctx, chain)
    q = TemplateComposer().compose_one(chain).question
    assert not find_leaks(q, chain.names) and "Platon" not in q


def test_regression_cardiovascular_diseases_never_describes_the_answer(ctx):
    _, ctx = ctx
    # Issue 15: answer "Cardiovascular disease" with the clue `filed under the category "Cardiovascular diseases"`.
    node = ctx.view.node_of_title["Cardiovascular disease"]
    page = ctx.all_pages[int(ctx.view.page_id[node])]
    texts = [c.text for c in page_clues(page)]
    assert "a cardiovascular disease" in texts  # from its own category "Cardiovascular diseases"
    names = walk_names(["Cardiovascular disease"], [["Cardiovascular disease"]])
    assert all(not find_leaks(c.text, names) for c in ctx.certifier.options(node, page, names))
    assert "a cardiovascular disease" not in [c.text for c in ctx.certifier.options(node, page, names)]


def test_regression_the_short_description_is_no_longer_the_final_clue(ctx):
    _, ctx = ctx
    # Issue 15: "a 42nd president of the United States" named Bill Clinton by itself. Descriptions are made
    # generic: the ordinal goes, and "a president of the United States" fits 11 pages of the dump.
    texts = [c.text for c in description_clues("42nd president of the United States")]
    assert texts == ["a president of the United States", "a president"]
    key = next(c.key for c in description_clues("42nd president of the United States"))
    assert ctx.clues.count(key) == 11
