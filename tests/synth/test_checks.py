"""Tests for src/hopforge/synth/checks.py on hand-checked paths of the toy graph."""

from __future__ import annotations

from tests.synth.conftest import path_of

from hopforge.synth.checks import check_malformed, named_entities, run_checks
from hopforge.synth.compose import Composed, TemplateComposer
from hopforge.synth.graph_view import GraphView
from hopforge.synth.questions import chains_from_paths


def _checked(view, titles, question=None):
    chains, pages = chains_from_paths(view, [path_of(view, titles)], seed=0)
    comp = TemplateComposer().compose_one(chains[0])
    if question is not None:
        comp = Composed(question=question, answer=comp.answer, answer_type="entity", composer="test",
                        final_clue=comp.final_clue)
    return comp, {r.name: r for r in run_checks(comp, chains[0], view, pages)}


def test_clean_chain_passes_every_check(toy_out):
    view = GraphView.load(toy_out)
    comp, res = _checked(view, ["Aldmoor", "Brannock Abbey", "Cedric Vane", "Duskwater Press (publisher)"])
    assert all(r.passed for r in res.values()), {n: r.detail for n, r in res.items()}
    assert comp.question.endswith("?") and "Duskwater" not in comp.question


def test_answer_alias_in_question_is_a_leak(toy_out):
    view = GraphView.load(toy_out)
    _, res = _checked(view, ["Aldmoor", "Brannock Abbey", "Cedric Vane", "Duskwater Press (publisher)"],
                      question="Which publisher, known simply as Duskwater, did the poet found?")
    assert not res["answer_leak"].passed and res["answer_leak"].reason == "answer_leaked"
    assert "Duskwater" in res["answer_leak"].detail  # the redirect title is an alias
    _, res = _checked(view, ["Aldmoor", "Brannock Abbey", "Cedric Vane", "Duskwater Press (publisher)"],
                      question="Which press did the poet of Brannock Abbey co-found?")
    assert res["answer_leak"].reason == "walk_entity_named"


def test_direct_link_from_start_is_a_shortcut(toy_out):
    view = GraphView.load(toy_out)
    # Harrow Lane Poets links to Duskwater Press directly: the 2-hop question is really 1 hop.
    _, res = _checked(view, ["Harrow Lane Poets", "Cedric Vane", "Duskwater Press (publisher)"])
    assert not res["shortcut"].passed and res["shortcut"].reason == "shortcut_path"
    assert "Harrow Lane Poets" in res["shortcut"].detail


def test_named_entity_linking_the_answer_is_a_shortcut(toy_out):
    view = GraphView.load(toy_out)
    q = "Start from a river in Westshire. What is the name of the town it leads to?"
    assert named_entities(q, view) == [view.node_of_title["Westshire"]]
    _, res = _checked(view, ["Ell (river)", "Westshire", "Aldmoor"], question=q)
    # Westshire is itself on the path (hop 1) and links to Aldmoor: that is fine for the last hop;
    # but a *named* Westshire linking the answer directly gives the answer away.
    assert res["shortcut"].reason == "named_entity_links_answer"


def test_one_page_with_all_clues_is_single_page_answerable(toy_out):
    view = GraphView.load(toy_out)
    # Aldmoor links to Westshire? No: Westshire -> Aldmoor -> Brannock Abbey, and Aldmoor links to both
    # Brannock Abbey (the answer) and Westshire (the start clue).
    _, res = _checked(view, ["Westshire", "Aldmoor", "Brannock Abbey"])
    assert res["single_page"].reason == "single_page_answerable"
    assert "'Aldmoor'" in res["single_page"].detail


def test_rival_with_same_final_clue_is_ambiguous(toy_out):
    view = GraphView.load(toy_out)
    # Westshire also links to Brackenford: a settlement established in 1711 -> same "early 18th century" clue.
    comp, res = _checked(view, ["Ell (river)", "Westshire", "Aldmoor"])
    assert "early 18th century" in comp.question
    assert res["ambiguity"].reason == "ambiguous_answer" and "Brackenford" in res["ambiguity"].detail


def test_malformed_outputs_get_specific_reasons():
    def reason(q):
        return check_malformed(Composed(question=q, answer="x", answer_type="entity", composer="t")).reason

    assert reason("") == "empty_output"
    assert reason("Which town lies north of the abbey") == "no_question_mark"
    assert reason("Which town?\nAnd which river?") == "multiple_lines"
    assert reason("Sure! Here you go: ???") == "not_a_question"
    assert reason("Какой город основан в начале XVIII века?") == "wrong_language"
    assert reason("Which town was founded in the early 18th century?") is None
