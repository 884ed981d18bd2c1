"""Obfuscated descriptions of entities, built from their own page data.

A question names no hop entity: each is described by features of its page
(short description, infobox type, a dated infobox fact, a category, a partial
name), with exact dates made vague ("in the early 1990s", "the late 18th
century") in the style of WebSailor / DeepDive. A feature whose text contains
any scrubbed term (titles and aliases of the walk's entities) is never used.

Every feature renders to a phrase; two pages share a clue exactly when they
render the same phrase, which is what the ambiguity check compares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
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


def _lower_first(s: str) -> str:
    # Keep acronyms and proper nouns ("American", "BBC"): lowercase only a plain first word.
    first, _, rest = s.partition(" ")
    if rest[:1].isupper():  # "West African country", "Classical Athenian philosopher": part of a name
        return s
    if len(first) > 1 and first[1:].islower() and first.lower() not in {"american", "british", "english"} \
            and not re.match(r"^[A-Z][a-z]+(?:an|ish|ese|i)$", first):
        return s[:1].lower() + s[1:]
    return s


@dataclass(frozen=True)
class Feature:
    """One describable property of a page, rendered as a phrase (the comparison key)."""

    kind: str  # short_description | infobox_type | fact | category | initial
    text: str


def _clean_value(v: str) -> str:
    v = re.sub(r"\{\{[^{}]*\}\}|\[\[|\]\]|<[^>]+>|''+", " ", v or "")
    return re.sub(r"\s+", " ", v).strip(" ,;")


def features(page: dict[str, Any]) -> list[Feature]:
    """All features of a page, most specific first (deterministic; memoised in the page dict)."""
    cached = page.get("_features")
    if cached is not None:
        return cached
    out: list[Feature] = []
    sd = (page.get("short_description") or "").strip().rstrip(".")
    if sd and not GENERIC_SHORT_DESC.match(sd):
        out.append(Feature("short_description", vague_dates(with_article(_lower_first(sd)))))
    itype = (page.get("infobox_type") or "").strip().replace("_", " ").lower()
    for kv in page.get("infobox") or []:
        key = (kv.get("key") or "").strip().lower()
        if key not in FACT_VERBS:
            continue
        m = re.search(YEAR, _clean_value(kv.get("value") or ""))
        if m:
            out.append(Feature("fact", f"{FACT_VERBS[key]} in {vague_year(int(m.group(0)))}"))
    if itype:
        out.append(Feature("infobox_type", with_article(itype)))
    for cat in page.get("categories") or []:
        m = BIRTHS_RE.match(cat)
        if m:
            verb = "born" if m.group(2) == "births" else "who died"
            out.append(Feature("fact", f"{verb} in {vague_year(int(m.group(1)))}"))
        elif not re.search(r"\d|articles|pages|wikipedia|wikidata|cs1|webarchive|stub|use ", cat, re.I):
            out.append(Feature("category", f'filed under the category "{cat}"'))
    seen: set[str] = set()
    uniq = []
    for f in out:
        if f.text not in seen:
            seen.add(f.text)
            uniq.append(f)
    if page:
        page["_features"] = uniq
    return uniq


def initial_feature(title: str) -> Feature:
    """A partial name: the first letter and word count of the title (never the title)."""
    base = re.sub(r"\s*\(.*\)$", "", title).strip()
    words = len(base.split())
    return Feature("initial", f"whose name starts with \"{base[:1].upper()}\" and has {words} word"
                              f"{'s' if words != 1 else ''}")


@lru_cache(maxsize=8192)
def _terms_pattern(terms: tuple[str, ...]) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    # One alternation per case mode: a handful of regex searches per text instead of one per term.
    terms = tuple(sorted({t.strip() for t in terms if len(t.strip()) >= 2}, key=len, reverse=True))
    short = [re.escape(t) for t in terms if len(t) <= 3]
    long = [re.escape(t) for t in terms if len(t) > 3]
    mk = lambda alts, flags: re.compile(rf"(?<!\w)(?:{'|'.join(alts)})(?!\w)", flags) if alts else None  # noqa: E731
    return mk(short, 0), mk(long, re.I)


def mentions_any(text: str, terms: list[str] | tuple[str, ...]) -> bool:
    """Whether ``text`` contains any term as a whole word (terms of <= 3 chars case-sensitively)."""
    short, long = _terms_pattern(tuple(terms))
    return bool((short and short.search(text)) or (long and long.search(text)))


def describe(page: dict[str, Any], title: str, scrub: list[str], n: int = 1,
             with_initial: bool = False) -> tuple[str, list[Feature]]:
    """An obfuscated noun phrase for the page, from up to ``n`` features that mention no scrubbed term.

    The noun-like feature (short description, else infobox type, else category)
    leads; further features are joined as qualifiers. Falls back to the partial
    name when the page offers nothing usable.
    """
    usable = [f for f in features(page) if not mentions_any(f.text, scrub)]
    heads = [f for f in usable if f.kind in ("short_description", "infobox_type")]
    head = heads[0] if heads else None
    rest = [f for f in usable if f is not head and not (head and head.kind == "short_description"
                                                          and f.kind == "infobox_type")]
    chosen: list[Feature] = [head] if head else []
    chosen += rest[: max(0, n - len(chosen))]
    if with_initial or not chosen:
        chosen.append(initial_feature(title))
    parts = []
    for f in chosen:
        if f.kind in ("short_description", "infobox_type"):
            parts.append(f.text)
        elif not parts:
            parts.append("an entity " + f.text)
        else:
            parts.append(f.text)
    text = parts[0] + (" (" + "; ".join(parts[1:]) + ")" if len(parts) > 1 else "")
    return text, chosen


# "musical artist" is left out on purpose: bands use that infobox too.
PERSON_TYPES = frozenset({"person", "officeholder", "writer", "scientist", "philosopher", "royalty", "president",
                          "prime minister", "politician", "actor", "artist", "military person", "sportsperson",
                          "comedian", "saint", "monarch", "religious biography"})


def is_person(page: dict[str, Any]) -> bool:
    itype = (page.get("infobox_type") or "").strip().replace("_", " ").lower()
    return itype in PERSON_TYPES or any(c.endswith(" births") for c in page.get("categories") or [])


def kind_noun(page: dict[str, Any]) -> str:
    """What the answer is, for the closing "What is the name of this ...?"."""
    itype = (page.get("infobox_type") or "").strip().replace("_", " ").lower()
    if itype and re.fullmatch(r"[a-z ]{2,30}", itype):
        return itype
    return "entity"
