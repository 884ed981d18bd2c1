"""Tests for src/hopforge/synth/leaks.py: every form of a name, property tests with generated names,
and the two leaks of issue 15 as regressions."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from hopforge.synth.leaks import Name, find_leaks, mentions, walk_names

# Made-up name words: lowercase consonant-vowel syllables (so no real English word by accident) ending
# in a consonant, capitalised. Vowel-final and -y names get their own tests.
SYLLABLE = st.sampled_from(["ba", "ko", "ri", "tu", "me", "sa", "lo", "ve", "zu", "ne", "da", "fi"])
WORD = st.builds(lambda syl, end: ("".join(syl) + end).capitalize(),
                 st.lists(SYLLABLE, min_size=2, max_size=3), st.sampled_from(["r", "l", "m", "k", "t", "d"]))


def leak(text, *names, source="title", entity=1):
    return find_leaks(text, [Name(entity, n, source) for n in names])


def test_regression_cardiovascular_diseases_in_a_category():
    # Issue 15: answer "Cardiovascular disease", clue `filed under the category "Cardiovascular diseases"`.
    (lk,) = leak('Which condition is filed under the category "Cardiovascular diseases"?', "Cardiovascular disease")
    assert (lk.form, lk.found) == ("inflection", "Cardiovascular diseases")


def test_regression_platonism_is_derived_from_plato():
    # Issue 15: answer "Plato", clue "founder of Platonism".
    (lk,) = leak("Which classical Athenian philosopher was the founder of Platonism?", "Plato")
    assert (lk.name, lk.form, lk.found) == ("Plato", "derived", "Platonism")


def test_derived_words_of_places_and_doctrines():
    assert leak("a Chinese poet", "China")[0].found == "Chinese"
    assert leak("a German town", "Germany")[0].form == "derived"
    assert leak("an Italian painter", "Italy")[0].found == "Italian"
    assert leak("the Roman road", "Rome")[0].found == "Roman"
    assert leak("a communist party", "Communism")[0].found == "communist"
    assert leak("a noted biologist", "Biology")[0].found == "biologist"


def test_words_that_only_look_alike_are_not_leaks():
    assert not leak("a chin strap", "China")
    assert not leak("a platform of the parish", "Plato", "Paris")
    assert not leak("the Romanian coast", "Rome")  # Romania is not a derivation of Rome
    assert not leak("Spanish guitar", "Spain")  # irregular derivations are not caught (documented)


def test_short_names_are_case_sensitive_and_anchors_never_derive():
    assert not leak("tell us more", "US", source="redirect") and leak("the US army", "US", source="redirect")
    assert leak("rocks fall", "rock", source="anchor")[0].form == "inflection"
    assert not leak("a rocky road", "rock", source="anchor")  # "rocky" would be a derived form


def test_multiword_names_match_inflected_and_across_punctuation():
    assert leak("presidents of the United States", "President of the United States")[0].form == "inflection"
    assert leak("fans of Guns N' Roses", "Guns N' Roses")[0].form == "exact"
    assert not leak("the United Kingdom", "United States")


def test_walk_names_keep_answer_anchors_and_only_name_like_intermediate_anchors():
    names = walk_names(["Queen (band)", "Rock music"], [["Queen (band)", "Queen", "the band"], ["Rock music", "rock"]],
                       [{"Queen (band)": "title", "Queen": "title", "the band": "anchor"},
                        {"Rock music": "title", "rock": "anchor"}])
    got = {(n.entity, n.text, n.source) for n in names}
    assert (1, "rock", "anchor") in got  # the answer keeps every alias
    assert (0, "the band", "anchor") not in got  # a generic anchor of an intermediate entity is not a name
    assert (0, "Queen", "title") in got


@settings(max_examples=200, deadline=None)
@given(WORD, st.sampled_from(["s", "'s", "ism", "ist", "ian", "ic", "ish", "ite", "ese"]), st.text(
    alphabet="abcdefghij ", max_size=20))
def test_any_inflected_or_derived_form_of_a_generated_name_is_caught(word, suffix, filler):
    text = f"{filler} the {word}{suffix} question?"
    leaks = leak(text, word)
    assert leaks and leaks[0].found.lower().startswith(word.lower())
    assert leaks[0].form in (("inflection",) if suffix in ("s", "'s") else ("derived",))


@settings(max_examples=200, deadline=None)
@given(WORD, WORD)
def test_a_generated_name_is_found_only_where_it_occurs(a, b):
    if b.lower().startswith(a.lower()[:-1]) or a.lower().startswith(b.lower()[:-1]):
        return  # one is a form of the other
    assert mentions(f"Which {a} is this?", [Name(0, a, "title")])
    assert not mentions(f"Which {b} is this?", [Name(0, a, "title")])


@settings(max_examples=100, deadline=None)
@given(st.lists(WORD, min_size=2, max_size=3))
def test_generated_multiword_names_with_a_plural_last_word(words):
    name = " ".join(words)
    text = f"one of the {' '.join(words[:-1])} {words[-1]}s"
    (lk,) = leak(text, name)
    assert lk.form == "inflection" and re.sub(r"\W+", " ", lk.found).lower().startswith(name.lower())
