"""Tests for src/hopforge/synth/describe.py and aliases.py."""

from __future__ import annotations

from hopforge.synth.aliases import answer_aliases, title_variants
from hopforge.synth.describe import describe, features, vague_dates, vague_year


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


def test_describe_skips_features_that_name_scrubbed_entities():
    page = {"short_description": "Market town in Westshire", "infobox_type": "settlement",
            "infobox": [{"key": "established", "value": "1712"}], "categories": ["1712 establishments"]}
    text, used = describe(page, "Aldmoor", scrub=["Westshire"], n=2)
    assert text == "a settlement (established in the early 18th century)"
    assert "Westshire" not in text and "Aldmoor" not in text
    text, _ = describe(page, "Aldmoor", scrub=[], n=1)
    assert text == "a market town in Westshire"
    text, _ = describe({"short_description": "18th-century Prussian philosopher."}, "Kant", scrub=[])
    assert text == "an 18th-century Prussian philosopher"
    text, _ = describe({"short_description": "1950–1953 war between North and South Korea"}, "Korean War", [])
    assert text == "an early 1950s war between North and South Korea"


def test_births_category_becomes_a_vague_fact_and_fallback_is_partial_name():
    assert any(f.text == "born in the late 1880s" for f in features({"categories": ["1888 births"]}))
    text, used = describe({}, "Duskwater Press (publisher)", scrub=[])
    assert text == 'an entity whose name starts with "D" and has 2 words' and used[0].kind == "initial"


def test_aliases_from_title_variants_redirects_and_anchors():
    assert title_variants("Mercury (planet)") == ["Mercury (planet)", "Mercury"]
    assert title_variants("Paris, Texas") == ["Paris, Texas", "Paris"]
    got = answer_aliases("Duskwater Press (publisher)", ["Duskwater"], ["Duskwater Press", "here", "the press"])
    assert got == ["Duskwater Press (publisher)", "Duskwater Press", "Duskwater", "the press"]
