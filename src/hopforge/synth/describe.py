"""Wording shared by the clues and the composers: vague dates, articles, persons.

Exact dates become vague ("in the early 1990s", "the late 18th century") in the style of
WebSailor / DeepDive; what a question may say about an entity is built from these in
:mod:`hopforge.synth.clues`.
"""

from __future__ import annotations

import re
from typing import Any

MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December|"
         r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.?")
YEAR = r"(?:1[0-9]{3}|20[0-9]{2})"
# "12 March 1994", "March 12, 1994", "March 1994", "1994" -- the whole date is replaced, keyed on its year.
DATE_RE = re.compile(rf"\b(?:\d{{1,2}}\s+{MONTH}\s+|{MONTH}\s+(?:\d{{1,2}},?\s+)?)?({YEAR})(?!\d)(?!s\b)")
# The year (or a year range) as an adjective after an article: "a 1994 film", "a 1950–1953 war".
ARTICLE_YEAR_RE = re.compile(rf"\b([Aa]n?) ({YEAR})(?:\s*[–-]\s*(?:{YEAR}|[0-9]{{2}}))?\b(?!s)(?= [a-z])")
RANGE_RE = re.compile(rf"\b({YEAR})\s*(?:–|-|—|to)\s*({YEAR}|[0-9]{{2}})\b")
PREPOSITION_BEFORE = re.compile(r"(?:\b(?:in|on|since|from|by|until|till|to|of|before|after|circa|around|c\.|"
                                r"ca\.|the)\s*|\()$", re.I)
GENERIC_SHORT_DESC = re.compile(r"^(?:topics referred to by the same term|wikimedia .*|disambiguation page.*|"
                                r"list article.*|none)$", re.I)
BIRTHS_RE = re.compile(rf"^({YEAR}) (births|deaths)$")

# Infobox keys whose dated value reads naturally as a verb phrase.
FACT_VERBS = {
    "birth_date": "born", "born": "born", "death_date": "who died", "died": "who died",
    "established": "established", "established_date": "established", "founded": "founded",
    "foundation": "founded", "formation": "formed", "formed": "formed", "years_active": "active from",
    "released": "released", "release_date": "released", "opened": "opened", "opening": "opened",
    "built": "built", "completed": "completed", "first_aired": "first aired", "date": "dated",
    "term_start": "who took office", "inception": "started", "launched": "launched", "discovered": "discovered",
    "publication_date": "published", "published": "published", "first_flight": "first flown",
    "dissolved": "dissolved", "abolished": "abolished", "extinct": "gone extinct",
}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def vague_year(year: int) -> str:
    """1994 -> "the mid-1990s"; 1712 -> "the early 18th century" (decades only from 1800 on)."""
    if year >= 1800:
        d = year % 10
        part = "early " if d <= 3 else "mid-" if d <= 6 else "late "
        return f"the {part}{year - d}s"
    c = (year - 1) // 100 + 1
    y = year % 100
    part = "early" if y <= 33 else "mid" if y <= 66 else "late"
    return f"the {part} {_ordinal(c)} century"


def vague_dates(text: str) -> str:
    """Replace exact dates and years in ``text`` with vague periods, keeping the sentence readable."""
    text = ARTICLE_YEAR_RE.sub(_article_year, text)
    text = RANGE_RE.sub(_range, text)
    text = re.sub(r"\b(?:from|in|between) (from|in) ", r"\1 ", text)  # "from 1789 to 1799" -> one preposition

    def repl(m: re.Match[str]) -> str:
        phrase = vague_year(int(m.group(1)))
        before = text[: m.start()]
        if before.rstrip().endswith(("the", "The")):
            return phrase[len("the "):]
        return phrase if PREPOSITION_BEFORE.search(before) or before.endswith("from ") else f"in {phrase}"

    text = DATE_RE.sub(repl, text)
    return re.sub(r"\b([Oo])n (the (?:early|mid-|late))", lambda m: ("I" if m.group(1) == "O" else "i") + "n "
                  + m.group(2), text)


def _range(m: re.Match[str]) -> str:
    a, b = int(m.group(1)), m.group(2)
    end = int(b) if len(b) == 4 else a // 100 * 100 + int(b)  # "1981–89" ends in 1989
    if end < a:
        end += 100
    va, vb = vague_year(a), vague_year(end)
    return f"in {va}" if va == vb else f"from {va} to {vb}"


def _article_year(m: re.Match[str]) -> str:
    # "a 1994 film" -> "a mid-1990s film": the year is an adjective here.
    period = vague_year(int(m.group(2)))[len("the "):]
    art = "an" if period[:1] in "aeiou" else "a"
    return (art.capitalize() if m.group(1)[0].isupper() else art) + " " + period


def with_article(phrase: str) -> str:
    """Prefix "a"/"an" unless the phrase already starts with a determiner."""
    if re.match(r"^(?:a|an|the|one|some|any)\b", phrase, re.I):
        return phrase
    first = phrase.split(" ", 1)[0]
    if re.match(r"^(?:[a-z]+est|most|least|first|last|only|sole)$", first) and first not in (
            "west", "interest", "forest", "protest", "contest", "conquest", "harvest", "manifest", "request"):
        return "the " + phrase  # a superlative names one thing
    if re.match(r"^[A-Z]{2,}\b", first):  # an acronym is read letter by letter: "an MTV award", "a NATO member"
        vowel_sound = first[0] in "AEFHILMNORSX" and not re.match(r"^(?:NATO|NASA|UNESCO|UNICEF|FIFA)$", first)
    else:
        vowel_sound = (phrase[:1].lower() in "aeiou" and not re.match(r"^(?:eu|uni|use|usu|one|once|ur)", phrase,
                                                                      re.I)) or re.match(r"^(?:8|11|18)(?!\d)", phrase)
    return ("an " if vowel_sound else "a ") + phrase


def _clean_value(v: str) -> str:
    """An infobox value without templates, links, tags or bold/italic quotes."""
    v = re.sub(r"\{\{[^{}]*\}\}|\[\[|\]\]|<[^>]+>|''+", " ", v or "")
    return re.sub(r"\s+", " ", v).strip(" ,;")


def _lower_first(s: str) -> str:
    # Keep acronyms and proper nouns ("American", "BBC"): lowercase only a plain first word.
    first, _, rest = s.partition(" ")
    if rest[:1].isupper():  # "West African country", "Classical Athenian philosopher": part of a name
        return s
    if len(first) > 1 and first[1:].islower() and first.lower() not in {"american", "british", "english"} \
            and not re.match(r"^[A-Z][a-z]+(?:an|ish|ese|i)$", first):
        return s[:1].lower() + s[1:]
    return s


# "musical artist" is left out on purpose: bands use that infobox too.
PERSON_TYPES = frozenset({"person", "officeholder", "writer", "scientist", "philosopher", "royalty", "president",
                          "prime minister", "politician", "actor", "artist", "military person", "sportsperson",
                          "comedian", "saint", "monarch", "religious biography"})


def is_person(page: dict[str, Any]) -> bool:
    itype = (page.get("infobox_type") or "").strip().replace("_", " ").lower()
    return itype in PERSON_TYPES or any(c.endswith(" births") for c in page.get("categories") or [])
