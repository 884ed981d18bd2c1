"""Tests for src/hopforge/synth/describe.py and aliases.py."""

from __future__ import annotations

from hopforge.synth.aliases import answer_aliases, title_variants
from hopforge.synth.describe import is_person, vague_dates, vague_year, with_article


def test_vague_dates():
    assert vague_year(1994) == "the mid-1990s"
    assert vague_year(2001) == "the early 2000s"
    assert vague_year(1712) == "the early 18th century"
    assert vague_dates("American singer (born 12 March 1965)") == "American singer (born in the mid-1960s)"
    assert vague_dates("Battle fought on 12 March 1994") == "Battle fought in the mid-1990s"
    assert vague_dates("poet (1888–1951)") == "poet (from the late 1880s to the early 1950s)"
    assert vague_dates("A 1994 film") == "A mid-1990s film"
    assert vague_dates("an 1950–1953 war between") == "an early 1950s war between"
    assert vague_dates("the 1990s band") == "the 1990s band"
    assert vague_dates("revolution from 1789 to 1799") == "revolution in the late 18th century"
    assert vague_dates("president (1981–89)") == "president (from the early 1980s to the late 1980s)"


def test_articles_and_persons():
    assert with_article("European country") == "a European country"
    assert with_article("MTV award winner") == "an MTV award winner" and with_article("NATO member") == "a NATO member"
    assert with_article("largest city in Texas") == "the largest city in Texas"
    assert with_article("Best Actor winner") == "a Best Actor winner"
    assert is_person({"categories": ["1888 births"]}) and not is_person({"infobox_type": "musical artist"})


def test_aliases_from_title_variants_redirects_and_anchors():
    assert title_variants("Mercury (planet)") == ["Mercury (planet)", "Mercury"]
    assert title_variants("Paris, Texas") == ["Paris, Texas", "Paris"]
    got = answer_aliases("Duskwater Press (publisher)", ["Duskwater"], ["Duskwater Press", "here", "the press"])
    assert got == ["Duskwater Press (publisher)", "Duskwater Press", "Duskwater", "the press"]
