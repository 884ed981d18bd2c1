"""Tests for src/hopforge/synth/checks.py: hand-checked questions on the toy graph, one per reject reason."""

from __future__ import annotations

import pytest

from hopforge.synth.checks import (
    CHECK_NAMES,
    check_giveaway,
    check_malformed,
    check_one_shot,
    named_entities,
)
from hopforge.synth.compose import Composed, TemplateComposer
from hopforge.synth.questions import check_question
from hopforge.synth.retrieval import clues_of, measure

from .conftest import chain_of, toy_config, toy_context

CLEAN = ["Aldmoor", "Brannock Abbey", "Cedric Vane", "Duskwater Press (publisher)"]


def checked(cfg, titles, question=None):
    ctx, chain = chain_of(cfg, titles)
    comp = TemplateComposer().compose_one(chain)
    if question is not None:
        comp = Composed(question=question, answer=comp.answer, answer_type="entity", composer="test")
    results, cols = check_question(cfg, ctx, chain, comp)
    return comp, {r.name: r for r in results}, cols


def test_clean_chain_passes_every_check(toy_out):
    comp, res, cols = checked(toy_config(toy_out), CLEAN)
    assert list(res) == list(CHECK_NAMES)
    assert all(r.passed for r in res.values()), {n: r.detail for n, r in res.items() if not r.passed}
    # Facts, not hyperlinks: each hop says what its evidence states.
    assert "is home to" in comp.question and "was painted by" in comp.question and "founded" in comp.question
    assert "links" not in comp.question and "article" not in comp.question
    assert cols["candidates"] == 1 and cols["solvable"] and cols["leaks"] == []


def test_answer_alias_in_any_form_is_a_leak(toy_out):
    cfg = toy_config(toy_out)
    _, res, cols = checked(cfg, CLEAN, "Which publisher, known simply as Duskwater, did the poet found?")
    assert res["answer_leak"].reason == "answer_leaked" and "redirect 'Duskwater'" in res["answer_leak"].detail
    assert cols["leaks"][0]["source"] == "redirect"
    # A derived word of the answer: "Westshirean" shares the stem of the answer Westshire.
    _, res, cols = checked(cfg, ["Aldmoor", "Westshire"], "Which county is home to a Westshirean market town?")
    assert res["answer_leak"].reason == "answer_leaked" and cols["leaks"][0]["form"] == "derived"
    _, res, _ = checked(cfg, CLEAN, "Which press did the painter of Brannock Abbey co-found?")
    assert res["answer_leak"].reason == "walk_entity_named" and "'Brannock Abbey'" in res["answer_leak"].detail


def test_direct_link_from_start_is_a_shortcut(toy_out):
    # Harrow Lane Poets links to Duskwater Press directly: the 2-hop question is really 1 hop.
    _, res, _ = checked(toy_config(toy_out), ["Harrow Lane Poets", "Cedric Vane", "Duskwater Press (publisher)"])
    assert res["shortcut"].reason == "shortcut_path" and "Harrow Lane Poets" in res["shortcut"].detail


def test_named_entity_linking_the_answer_is_a_shortcut(toy_out):
    cfg = toy_config(toy_out)
    q = "Start from a publishing house based in Westshire. Which market town is in that county?"
    view = toy_context(cfg).view
    assert named_entities(q, view) == [view.node_of_title["Westshire"]]
    _, res, _ = checked(cfg, ["Duskwater Press (publisher)", "Westshire", "Aldmoor"], q)
    assert res["shortcut"].reason == "named_entity_links_answer"


def test_one_page_with_all_clues_is_single_page_answerable(toy_out):
    # Aldmoor links to the answer Brannock Abbey and to the start Westshire.
    _, res, _ = checked(toy_config(toy_out), ["Westshire", "Aldmoor", "Brannock Abbey"])
    assert res["single_page"].reason == "single_page_answerable" and "'Aldmoor'" in res["single_page"].detail


def test_rival_fitting_every_clue_is_ambiguous_by_certificate(toy_out):
    # Westshire is linked with Aldmoor and Brackenford, both market towns: "a market town" fits both, and
    # Aldmoor's other clues (its category names Westshire, a walk entity) are not usable.
    comp, res, cols = checked(toy_config(toy_out), ["Duskwater Press (publisher)", "Westshire", "Aldmoor"])
    assert "a market town" in comp.question
    assert res["certificate"].reason == "ambiguous_answer" and cols["candidates"] == 2
    assert set(cols["candidate_witnesses"]) == {"Aldmoor", "Brackenford"}
    town = next(c for c in cols["certificate"] if c["entity"] == 2)
    assert town["clue"] == "a market town" and town["candidates"] == 2 and town["witnesses"] == ["Brackenford"]


def test_entity_without_a_clue_fitting_enough_pages_has_no_semantic_clue(toy_out):
    # On ten pages nothing about the abbey fits 3 pages: it would be named by a puzzle, so the question is dropped.
    comp, res, _ = checked(toy_config(toy_out, **{"synth.min_clue_pages": 3}), CLEAN)
    assert res["certificate"].reason == "no_semantic_clue" and "'Brannock Abbey'" in res["certificate"].detail
    assert "starts with" not in comp.question and "word" not in comp.question


def test_retrieval_gates_on_hand_written_questions(toy_out):
    ctx = toy_context(toy_config(toy_out))
    press = ctx.search.index_of("Duskwater Press (publisher)")
    easy = measure("Which independent publishing house is based in the county and published the poets' anthologies?",
                   press, ctx.search)
    assert easy.one_shot_rank == 1 and check_one_shot(easy, 5).reason == "one_shot_searchable"
    assert check_giveaway(easy).reason == "giveaway_clue" and "independent publishing house" in easy.best_clue
    hard = measure("Think of a market town. What is the company that its painter founded?", press, ctx.search)
    assert check_one_shot(hard, 0).passed  # k = 0: no rank is too high
    assert clues_of("A big town, which has a monastery (ruined). Who is it?") == [
        "A big town, which has a monastery (ruined)", "A big town", "has a monastery", "Who is it"]


def test_chain_the_replay_cannot_follow_is_unsolvable_offline(toy_out):
    _, res, cols = checked(toy_config(toy_out, **{"synth.replay_max_turns": 4}), CLEAN)
    assert res["replay"].reason == "unsolvable_offline" and "limit 4" in res["replay"].detail
    assert [s["action"] for s in cols["reference_path"]] == ["search", "follow", "follow", "follow"]
    # Westshire's page never names the press (the press's page states the fact), and searching
    # "Westshire is home to a company" ranks it 5th: past the top 1 the agent reads here.
    _, res, cols = checked(toy_config(toy_out, **{"synth.replay_k": 1}),
                           ["Aldmoor", "Westshire", "Duskwater Press (publisher)"])
    assert res["replay"].reason == "unsolvable_offline"
    assert "hop 2 to 'Duskwater Press (publisher)': not named on 'Westshire'" in res["replay"].detail
    assert [(s["action"], s["rank"]) for s in cols["reference_path"]] == [("search", 1), ("follow", 1), (None, 5)]


@pytest.mark.parametrize(("question", "language", "reason"), [
    ("", "en", "empty_output"),
    ("Which town lies north of the abbey", "en", "no_question_mark"),
    ("Which town?\nAnd which river?", "en", "multiple_lines"),
    ("Sure! Here you go: ???", "en", "not_a_question"),
    ("Какой город основан в начале XVIII века?", "en", "wrong_language"),
    ("Which town was founded in the early 18th century?", "ltg", "wrong_language"),
    ("Which town was founded in the early 18th century?", "en", None),
    ("Kura piļsāta ir ļoti lela un zynoma vysā pasaulī?", "ltg", None),
])
def test_malformed_outputs_get_specific_reasons(question, language, reason):
    got = check_malformed(Composed(question=question, answer="x", answer_type="entity", composer="t"), language)
    assert got.reason == reason


def _networkx_distances(view, target: int, radius: int, cap: int) -> tuple[dict[int, int], bool]:
    """The shortcut check's neighbourhood as first written: a networkx graph of the BFS's reversed
    links, then networkx's shortest path lengths (the reference for the numpy BFS)."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_node(target)
    frontier, seen, truncated = [target], {target}, False
    for _ in range(radius):
        nxt = []
        for v in frontier:
            for u in view.in_neighbours(v).tolist():
                g.add_edge(v, u)
                if u not in seen:
                    seen.add(u)
                    nxt.append(u)
        frontier = nxt
        if len(seen) > cap:
            truncated = True
            break
    return dict(nx.single_source_shortest_path_length(g, target, cutoff=radius)), truncated


@pytest.mark.parametrize("cap", [50_000, 40])
def test_shortcut_neighbourhood_bfs_equals_networkx_on_enwiki233(enwiki233_graph, monkeypatch, cap):
    """Every node of enwiki-233 as the answer, radius 1-3, with and without truncation."""
    from hopforge.storage.arrays import latest_run
    from hopforge.synth import checks
    from hopforge.synth.graph_view import GraphView

    monkeypatch.setattr(checks, "MAX_NEIGHBOURHOOD", cap)
    view = GraphView.load(enwiki233_graph, latest_run(enwiki233_graph, "graph"))
    truncated = 0
    for target in range(view.n_nodes):
        for radius in (1, 2, 3):
            got = checks._distances_to(view, target, radius)
            assert got == _networkx_distances(view, target, radius, cap), (target, radius)
            truncated += got[1]
    assert (truncated > 0) == (cap == 40)
