"""Clues: what a question may say about an entity, and how many pages of the dump each fits.

Every page yields a set of clues from its own data, in three kinds:

``noun``  a noun phrase naming what it is, made generic step by step: from the short
          description ("42nd president of the United States (1993–2001)" -> "president of
          the United States", "president"; "Australian hard rock band" -> "hard rock band",
          "rock band", "band"), from the infobox type ("officeholder") and from categories
          whose head is a plural noun ("Grammy Award winners" -> "Grammy Award winner";
          "Presidents of the United States" -> "president of the United States").
``fact``  a dated infobox fact or a birth/death category, with the date made vague at three
          levels ("born in the mid-1940s", "born in the 1940s", "born in the 20th century").

A page *satisfies* a clue when the clue is among its own clues (the same normalised key),
whatever source it came from: a page whose category says "Presidents of the United States"
and one whose description says "41st president of the United States" both satisfy "a
president of the United States". :class:`~hopforge.synth.clue_index.ClueIndex` maps every key to the pages that satisfy
it, over the whole dump; the question stage uses it for the uniqueness certificate (each
clue alone must fit several pages; the whole chain exactly one).

Partial names ("starts with "L" and has 1 word") are never clues: they are puzzles, not
facts about the entity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hopforge.synth.describe import (BIRTHS_RE, FACT_VERBS, GENERIC_SHORT_DESC, YEAR, _clean_value, _lower_first,
                                     vague_dates, vague_year, with_article)

# Words that end the noun phrase of a description: what follows is a clause, not the name of a kind.
_CLAUSE = re.compile(r"\s+(?:who|which|that|whose|where|formed|founded|born|from|since|with|using|consisting|based|active|"
                     r"located|involving|following|prior|until|between|over|during|known|used|made|written|"
                     r"produced|published|released|created|developed|designed|directed|starring|featuring|belonging|serving|"
                     r"comprising|including|containing|representing|operating|spanning|covering|dedicated|devoted|"
                     r"responsible|"
                     r"sometimes|often|also|mainly|mostly|primarily|usually|because|after|before|by|to)\b.*$", re.I)
_COMPLEMENT = re.compile(r"^(?P<head>.+?)\s+(?P<prep>of|in|at|on|for|from|to|within|near|beside|along|across|around|"
                         r"outside|inside|among|under|over|between)\s+(?P<rest>.+)$")
_ORDINAL = re.compile(r"\b\d+(?:st|nd|rd|th)(?:[- ]century)?\b[- ]?", re.I)
_NON_SEMANTIC_CATEGORY = re.compile(r"\d|articles|pages|wikipedia|wikidata|cs1|webarchive|stub|use |living people|"
                                    r"redirects|disambiguation|templates|categories|^deaths\b|^burials\b", re.I)
_IRREGULAR_PLURALS = {"people": "person", "men": "man", "women": "woman", "children": "child", "alumni": "alumnus",
                      "alumnae": "alumna", "media": "medium", "criteria": "criterion", "phenomena": "phenomenon",
                      "sportspeople": "sportsperson", "businesspeople": "businessperson",
                      "clergy": "clergy"}
_NOT_PLURAL = re.compile(r"(?:ss|us|is|ics|ous|ws)$")
# Heads too vague to say anything ("a thing", "an aspect").
_VAGUE_HEADS = frozenset("aspect thing term concept topic subject entity item article list group of member winner "
                         "recipient nominee alumnus alumna founder inductee honoree laureate".split())
# Common nouns that look like demonyms ("Politicians" is not a nationality).
_COMMON_IAN = re.compile(
    r"^(?:\w*ician|historians?|librarian|comedian|guardian|theologian|grammarian|humanitarian|vegetarian|"
    r"veterinarian|libertarian|utilitarian|egalitarian|parliamentarian|civilian|republican|barbarian|antiquarian|"
    r"seminarian|agrarian|totalitarian|authoritarian|proletarian|sectarian|custodian|patrician|veteran|pagan|"
    r"artisan|partisan|\w*(?:sman|swoman|woman|chairman|spokesman)|man|human|dietitian)$")
_STOP = frozenset("a an the of in at on for from to and or with by".split())
_SUPERLATIVE = re.compile(r"^(?:\w+est|most|least|first|last|only|sole|main|chief|principal)$", re.I)
# Category heads that are events, not kinds of the entity ("Accidental deaths in Ohio" is not "an accidental death").
_EVENT_PLURALS = frozenset("deaths births burials murders assassinations suicides disappearances controversies "
                           "scandals incidents survivors victims".split())
# Modifiers a generalisation must keep: a former capital is not a capital.
_MEANING_MODIFIERS = frozenset("former defunct ex fictional proposed unrecognized unrecognised disputed historical "
                               "ancient extinct dissolved hypothetical mythological legendary".split())


@dataclass(frozen=True)
class Clue:
    """One thing a question may say about an entity. ``key`` is what two pages must share to both
    satisfy it; ``text`` is how the question says it (a noun phrase with its article, or a
    participle phrase for a fact)."""

    kind: str  # noun | fact
    text: str
    key: str
    source: str  # description | type | category | infobox | category_date

    @property
    def head(self) -> str:
        """The noun phrase without its article ("rock band"), for "That rock band ..."."""
        return re.sub(r"^(?:an?|the)\s+", "", self.text)


def singular(word: str) -> str | None:
    """The singular of a plural English noun, or None when ``word`` does not look plural."""
    w = word.lower()
    if w in _IRREGULAR_PLURALS:
        out = _IRREGULAR_PLURALS[w]
    elif w.endswith("men") and len(w) > 4:  # statesmen, sportsmen
        out = w[:-3] + "man"
    elif w.endswith("ies") and len(w) > 4:
        out = w[:-3] + "y"
    elif re.search(r"(?:ches|shes|sses|xes|zes)$", w):
        out = w[:-2]
    elif w.endswith("s") and not _NOT_PLURAL.search(w) and len(w) > 3:
        out = w[:-1]
    else:
        return None
    return word[:1] + out[1:] if word[:1].isupper() else out


def _norm_key(phrase: str) -> str:
    p = re.sub(r"^(?:an?|the)\s+", "", phrase.strip(), flags=re.I)
    return "noun:" + re.sub(r"\s+", " ", p).lower()


def noun_phrases(np_text: str) -> list[str]:
    """A noun phrase and its generalisations, most specific first: "largest city in Texas" ->
    ["largest city in Texas", "largest city", "city"].

    Generalising drops leading modifiers, never inside a name (the rest must start with a
    lowercase word: "Brit Award winner" -> "winner", not "Award winner"), never past a modifier
    that changes the meaning ("former state capital" stays whole), and drops a complement only
    together with the whole of it ("member state of NATO" -> "member state", not "state of NATO")."""
    np_text = re.sub(r"\s+", " ", np_text).strip(" ,;.-")
    if not np_text:
        return []
    m = _COMPLEMENT.match(np_text)
    head, tail = (m.group("head"), f" {m.group('prep')} {m.group('rest')}") if m else (np_text, "")
    words = head.split()
    if not words or words[-1].lower() in _STOP:
        return []
    limit = next((i for i, w in enumerate(words[:-1]) if w.lower().strip("-") in _MEANING_MODIFIERS or
                  w.lower().startswith(("non-", "anti-", "pre-", "post-", "ex-"))), None)
    cuts = [j for j in range(len(words)) if j == 0 or (
        words[j][:1].islower() and words[j - 1].lower() not in _STOP and (limit is None or j <= limit))]
    out: list[str] = [head + tail] if tail else []
    if _SUPERLATIVE.match(words[0]):  # "largest city in Texas": whole, or the bare noun; never "a largest city"
        out = [head + tail] if tail or len(words) == 1 else [head]
        cuts = [j for j in cuts if j > (1 if words[0].lower() in ("most", "least") else 0)]
    for j in cuts:
        h = words[j:]
        if len(h) == 1 and h[0].lower() in _VAGUE_HEADS:
            continue
        out.append(" ".join(h))
    # Hyphenated compounds: "singer-songwriter" is also a "singer".
    last = words[-1]
    if "-" in last and last[:1].islower():
        part = last.split("-", 1)[0]
        if len(part) > 3 and part.isalpha():
            out.append(part)
    seen: set[str] = set()
    return [p for p in out if not (p.lower() in seen or seen.add(p.lower()))]  # type: ignore[func-returns-value]


def description_clues(short_description: str | None) -> list[Clue]:
    sd = (short_description or "").strip().rstrip(".")
    if not sd or GENERIC_SHORT_DESC.match(sd):
        return []
    sd = re.sub(r"\s*\([^()]*\)", "", sd)
    sd = _ORDINAL.sub("", sd).strip()
    out: list[Clue] = []
    # Conjuncts: "singer, songwriter and actress"; a comma before a capital starts a place
    # ("Capital of Texas, United States"), which stays with its noun.
    for conj in re.split(r",\s*(?:and\s+)?(?=[a-z])|;\s*|\s+and\s+|\s+or\s+", sd):
        conj = _CLAUSE.sub("", conj.strip())
        if not conj or not re.search(r"[A-Za-z]", conj):
            continue
        conj = vague_dates(_lower_first(conj))
        for p in noun_phrases(conj):
            out.append(Clue("noun", with_article(p), _norm_key(p), "description"))
    return out


def category_clues(category: str) -> list[Clue]:
    """A category whose head noun is plural, as singular noun phrases ("Grammy Award winners" ->
    "a Grammy Award winner"); other categories (topics: "Electronica", "House of Windsor") give none."""
    if _NON_SEMANTIC_CATEGORY.search(category) or BIRTHS_RE.match(category):
        return []
    cat = re.sub(r"\s*\([^()]*\)", "", category).strip()
    m = re.search(r"\s+(?:of|in|at|on|for|from|to|within|who|which|that|with|by)\s", cat)
    head, tail = (cat[: m.start()], cat[m.start():]) if m else (cat, "")
    words = head.split()
    if not words or " and " in f" {head} " or words[-1].lower() in _EVENT_PLURALS:
        return []
    sing = singular(words[-1])
    if sing is None:
        return []
    words = [*words[:-1], sing]
    # Lowercase the first word only when it is an ordinary word ("Member states", "Social critics"),
    # not part of a name ("Grammy Award winners", "Brit Award winners").
    if len(words) == 1 or words[1][:1].islower():
        words[0] = words[0].lower() if _COMMON_IAN.match(words[0].lower()) else _lower_first(words[0])
    head = " ".join(words)
    # A category's bare head noun says little and often misleads ("Political controversies" -> "a
    # controversy", "Sports team owners" -> "an owner"): generalisations keep two words at least.
    phrases = ([head + tail] if tail else []) + [p for p in noun_phrases(head) if len(p.split()) >= 2 or p == head]
    return [Clue("noun", with_article(p), _norm_key(p), "category") for p in phrases]


def type_clue(infobox_type: str | None) -> list[Clue]:
    t = re.sub(r"\s*\([^()]*\)", "", (infobox_type or "").replace("_", " ")).strip().lower()
    if not t or not re.fullmatch(r"[a-z][a-z .'-]{1,30}", t) or t in ("generic", "person"):
        return []
    return [Clue("noun", with_article(t), _norm_key(t), "type")]


def _vague_levels(verb: str, year: int) -> list[Clue]:
    """A dated fact at three levels of vagueness: part of a decade, the decade, the century."""
    verb = verb.removesuffix(" from")  # "active from" + "in the 1960s"
    out = [Clue("fact", f"{verb} in {vague_year(year)}", f"fact:{verb}:{vague_year(year)}", "infobox")]
    if year >= 1800:
        decade = f"the {year - year % 10}s"
        out.append(Clue("fact", f"{verb} in {decade}", f"fact:{verb}:{decade}", "infobox"))
    c = (year - 1) // 100 + 1
    suffix = "th" if 10 <= c % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(c % 10, "th")
    century = f"the {c}{suffix} century"
    out.append(Clue("fact", f"{verb} in {century}", f"fact:{verb}:{century}", "infobox"))
    return out


def fact_clues(page: dict[str, Any]) -> list[Clue]:
    out: list[Clue] = []
    for kv in page.get("infobox") or []:
        key = (kv.get("key") or "").strip().lower()
        if key not in FACT_VERBS:
            continue
        m = re.search(YEAR, _clean_value(kv.get("value") or ""))
        if m:
            out += _vague_levels(FACT_VERBS[key], int(m.group(0)))
    for cat in page.get("categories") or []:
        m = BIRTHS_RE.match(cat)
        if m:
            out += [Clue("fact", c.text, c.key, "category_date")
                    for c in _vague_levels("born" if m.group(2) == "births" else "who died", int(m.group(1)))]
    return out


def page_clues(page: dict[str, Any]) -> list[Clue]:
    """Every clue of a page (deterministic order, one per key; memoised in the page dict)."""
    cached = page.get("_clues")
    if cached is not None:
        return cached
    found = description_clues(page.get("short_description")) + type_clue(page.get("infobox_type")) + \
        [c for cat in page.get("categories") or [] for c in category_clues(cat)] + fact_clues(page)
    seen: set[str] = set()
    out = [c for c in found if not (c.key in seen or seen.add(c.key))]  # type: ignore[func-returns-value]
    if page:
        page["_clues"] = out
    return out
