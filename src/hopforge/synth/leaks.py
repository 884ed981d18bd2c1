"""Leaks: a name of a walk entity in the question, in any of the forms a reader would recognise.

The question must name no entity of its walk, and above all not the answer. A whole-word
match misses most real leaks (issue 15): the answer "Cardiovascular disease" inside the clue
"Cardiovascular diseases", the answer "Plato" inside "founder of Platonism". A name matches
here in three forms:

``exact``       the name as a whole word sequence (case-insensitive; names of <= 3 characters
                case-sensitively, so the answer "US" does not match "us").
``inflection``  a regular English inflection of any of its words: plural (-s, -es, -ies,
                -ves), possessive, -ed/-d/-ing, and the reverse (a plural name, a singular text).
``derived``     a derived word sharing the stem of the name's last word (>= 4 letters): the
                name with at most its last letter dropped, then an optional linking letter and
                a derivational suffix: Plato -> Platonism, Platonic; Italy -> Italian; Rome ->
                Roman; Cuba -> Cuban; Biology -> biologist; and -y dropped (Germany -> German),
                -ism as -ist (Communism -> communist). Irregular derivations (France ->
                French, Spain -> Spanish) are not caught.

Names are the entity's title (and its variants), redirect titles to it, and anchor texts
other pages use for it. Anchors are often common words ("rock" for *Rock music*), so they
match exactly and as inflections only (never as derived words), and an intermediate
entity's anchors count only when they look like names (capitalised).

Matching is a token-level index per set of names (cached): one dictionary lookup per word of
a text, plus a few for the stems a word could be derived from, so a chain's many candidate
clues are screened quickly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MIN_DERIVED = 4  # letters a word needs before derived forms of it count


@dataclass(frozen=True)
class Name:
    """One surface form of one walk entity."""

    entity: int  # position on the walk (0 = start, hops = answer)
    text: str
    source: str  # title | redirect | anchor


@dataclass(frozen=True)
class Leak:
    entity: int
    name: str
    source: str  # title | redirect | anchor
    form: str  # exact | inflection | derived
    found: str  # the text of the question that matched

    def row(self) -> dict[str, object]:
        return {"entity": self.entity, "name": self.name, "source": self.source, "form": self.form,
                "found": self.found}


_INFLECTIONS = ("s", "es", "ed", "d", "ing")
_DERIVE_SUFFIXES = tuple(sorted(set(
    "ism isms ist ists istic ian ians ean eans an ans ic ics ical ically ite ites ese ish ity ities ize ise ized ised "
    "ization isation esque ia ial ine ous al ary er ers dom hood".split()), key=len, reverse=True))
_TOKEN = re.compile(r"\w+")


def _inflected(w: str) -> set[str]:
    """Regular inflections of one lowercase word, both ways (a plural name, a singular text)."""
    out = {w} | {w + x for x in _INFLECTIONS}
    if w.endswith("y") and len(w) > 2:
        out.add(w[:-1] + "ies")
    if w.endswith("f"):
        out.add(w[:-1] + "ves")
    if w.endswith("fe"):
        out.add(w[:-2] + "ves")
    if w.endswith("e"):
        out.add(w[:-1] + "ing")
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        out.add(w[:-3] + "y" if w.endswith("ies") else w[:-1])
    return out


def _derived_bases(token: str) -> set[str]:
    """What ``token`` could be derived from: itself minus a derivational suffix and a linking letter
    ("platonism" -> "plato", "platon", ...; "communist" -> "communism")."""
    out: set[str] = set()
    for suf in _DERIVE_SUFFIXES:
        if token.endswith(suf) and len(token) > len(suf) + 2:
            base = token[: -len(suf)]
            out.add(base)
            if base[-1:] in ("n", "t", "i"):
                out.add(base[:-1])
    for suf in ("n", "ns"):
        if token.endswith(suf) and len(token) > len(suf) + 3:
            out.add(token[: -len(suf)])
    for suf in ("ist", "ists", "istic", "istically"):
        if token.endswith(suf):
            out.add(token[: -len(suf)] + "ism")
    return out


class _Matcher:
    """Token-level index of a set of names: one dictionary lookup per word of a text."""

    def __init__(self, names: tuple[tuple[str, bool], ...]) -> None:
        self.short: dict[str, list[str]] = {}  # case-sensitive exact short names
        self.by_last: dict[str, list[tuple[str, list[set[str]]]]] = {}  # inflected last word -> names
        self.by_stem: dict[str, list[tuple[str, list[set[str]], str]]] = {}  # derivable stem -> names
        for name, derive in names:
            if _is_short(name):
                self.short.setdefault(name.strip(), []).append(name)
                continue
            words = [w.lower() for w in _TOKEN.findall(name)]
            if not words or not any(len(w) >= 2 for w in words) or not any(ch.isalpha() for ch in name):
                continue
            before = [_inflected(w) for w in words[:-1]]
            last = words[-1]
            for form in _inflected(last):
                self.by_last.setdefault(form, []).append((name, before))
            if derive and sum(ch.isalpha() for ch in last) >= MIN_DERIVED:
                self.by_stem.setdefault(last, []).append((name, before, last))
                self.by_stem.setdefault(last[:-1], []).append((name, before, last))
                if last.endswith("y") and len(last) > MIN_DERIVED:  # Germany -> German
                    self.by_last.setdefault(last[:-1], []).append((name, before))

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """(name, start, end) of every match in ``text``."""
        hits: list[tuple[str, int, int]] = []
        tokens = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]
        low = [t[0].lower() for t in tokens]
        for i, (tok, start, end) in enumerate(tokens):
            for name in self.short.get(tok, ()):
                hits.append((name, start, end))
            cands = [(n, before) for n, before in self.by_last.get(low[i], ())]
            for base in _derived_bases(low[i]) if self.by_stem else ():
                cands += [(n, before) for n, before, _ in self.by_stem.get(base, ())]
            for name, before in cands:
                j = i - len(before)
                if j < 0 or not all(low[j + m] in before[m] for m in range(len(before))):
                    continue
                if j < i and not all(re.fullmatch(r"[\W_]{1,3}", text[tokens[m][2]:tokens[m + 1][1]])
                                     for m in range(j, i)):
                    continue
                hits.append((name, tokens[j][1], end))
        return hits


@lru_cache(maxsize=4096)
def _matcher(names: tuple[tuple[str, bool], ...]) -> _Matcher:
    return _Matcher(names)


def _is_short(name: str) -> bool:
    return len(name.strip()) <= 3


def _derives(name: Name) -> bool:
    return name.source != "anchor"


def mentions(text: str, names: list[Name] | tuple[Name, ...]) -> bool:
    """Whether ``text`` contains any of ``names`` in any form (see the module docstring)."""
    return bool(_matcher(tuple((n.text, _derives(n)) for n in names)).find(text))


def find_leaks(text: str, names: list[Name] | tuple[Name, ...]) -> list[Leak]:
    """Every name of ``names`` found in ``text``, one :class:`Leak` per (entity, name), with its form."""
    hits = _matcher(tuple((n.text, _derives(n)) for n in names)).find(text)
    if not hits:
        return []
    found: dict[str, str] = {}
    for name, start, end in hits:
        if end < len(text) and text[end] in "'’":  # a possessive: "Plato's"
            end += 2 if text[end + 1: end + 2] == "s" else 1
        found.setdefault(name, text[start:end])
    leaks: list[Leak] = []
    seen: set[tuple[int, str]] = set()
    for n in names:
        key = (n.entity, n.text.casefold())
        if n.text in found and key not in seen:
            seen.add(key)
            leaks.append(Leak(n.entity, n.text, n.source, _form(found[n.text], n.text), found[n.text]))
    return leaks


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _form(found: str, name: str) -> str:
    a, b = _words(found.lower()), _words(name.lower())
    if a == b:
        return "exact"
    a = _words(re.sub(r"['’]s?(?!\w)", "", found.lower()))  # a possessive is an inflection
    if len(a) == len(b) and all(_inflects(x, y) for x, y in zip(a, b, strict=True)):
        return "inflection"
    return "derived"


def _inflects(x: str, y: str) -> bool:
    return x == y or x in _inflected(y) or y in _inflected(x)


def walk_names(titles: list[str], aliases: list[list[str]], sources: list[dict[str, str]] | None = None
               ) -> list[Name]:
    """The names of a walk's entities that must not appear in its question.

    ``aliases[i]`` is entity i's alias list (title variants, redirects, anchors; see
    :mod:`hopforge.synth.aliases`) and ``sources[i]`` maps an alias to its source (title,
    redirect or anchor; missing: anchor unless it is a title variant). The answer keeps every
    alias; an intermediate entity's anchors count only when they look like names."""
    last = len(titles) - 1
    out: list[Name] = []
    for i, names in enumerate(aliases):
        src = (sources[i] if sources else None) or {}
        for a in names:
            kind = src.get(a, "title" if a == titles[i] or a in _title_variants(titles[i]) else "anchor")
            if kind == "anchor" and i != last and not _name_like(a):
                continue
            out.append(Name(i, a, kind))
    return out


def _title_variants(title: str) -> tuple[str, ...]:
    from hopforge.synth.aliases import title_variants

    return tuple(title_variants(title))


def _name_like(anchor: str) -> bool:
    """Capitalised words, as names are ("Vane", "River Ell"); "the band" or "rock" are not."""
    return len(anchor.strip()) >= 4 and any(w[:1].isupper() for w in anchor.split())
