"""Tests for src/hopforge/synth/clues.py: descriptions made generic, categories as kinds, vague dates."""

from __future__ import annotations

from hopforge.synth.clue_index import ClueIndex
from hopforge.synth.clues import (
    category_clues,
    description_clues,
    fact_clues,
    page_clues,
    singular,
)


def texts(clues):
    return [c.text for c in clues]


def test_descriptions_become_generic_step_by_step():
    assert texts(description_clues("42nd president of the United States (1993–2001)")) == [
        "a president of the United States", "a president"]
    assert texts(description_clues("Australian hard rock band")) == [
        "an Australian hard rock band", "a hard rock band", "a rock band", "a band"]
    assert texts(description_clues("Largest city in Texas")) == ["the largest city in Texas", "a city"]
    # Conjuncts are separate kinds; a comma before a capital keeps the place with its noun.
    assert "an actress" in texts(description_clues("Australian-British singer, songwriter and actress"))
    assert texts(description_clues("Capital of Texas, United States"))[0] == "a capital of Texas, United States"
    # Never a name cut in half, never a generalisation that changes the meaning.
    assert "an Award winner" not in texts(category_clues("Brit Award winners"))
    assert "a capital" not in texts(category_clues("Former state capitals in the United States"))


def test_categories_with_a_plural_head_are_kinds_and_topic_categories_are_not():
    assert texts(category_clues("Presidents of the United States"))[0] == "a president of the United States"
    assert texts(category_clues("Grammy Award winners")) == ["a Grammy Award winner"]
    assert texts(category_clues("Painters who committed suicide")) == ["a painter who committed suicide", "a painter"]
    assert category_clues("Electronica") == [] and category_clues("House of Windsor") == []
    assert category_clues("Accidental deaths in Tennessee") == []  # an event, not a kind of person
    assert category_clues("1888 births") == [] and category_clues("Living people") == []
    assert singular("alumni") == "alumnus" and singular("Countries") == "Country" and singular("chess") is None


def test_dated_facts_at_three_levels_of_vagueness():
    page = {"infobox": [{"key": "birth_date", "value": "{{birth date|1946|6|14}}"}], "categories": ["1946 births"]}
    assert texts(fact_clues(page))[:3] == ["born in the mid-1940s", "born in the 1940s", "born in the 20th century"]
    assert "active in the 1960s" in texts(fact_clues({"infobox": [{"key": "years_active", "value": "1962–2016"}]}))


def test_a_page_satisfies_a_clue_whatever_source_gave_it():
    # One page says it in its description, the other in a category: both are "a president of the United States".
    a = {"short_description": "41st president of the United States"}
    b = {"categories": ["Presidents of the United States"]}
    index = ClueIndex.from_pages(2, [(0, a), (1, b)])
    key = next(c.key for c in page_clues(a) if c.text == "a president of the United States")
    assert index.nodes(key).tolist() == [0, 1] and index.count("noun:no such clue") == 0
    # Partial names are never clues.
    assert not any("starts with" in c.text for c in page_clues({"short_description": None}))
