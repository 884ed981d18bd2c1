"""Answer aliases: every surface form a correct answer may take.

Sources, in order: the title itself, title variants (parenthetical
disambiguator removed: "Mercury (planet)" -> "Mercury"; a trailing ", Region"
qualifier removed for place names: "Paris, Texas" -> "Paris"), redirects to the
answer page, and the anchor texts other pages use for links to it (most used
first). Case-insensitive duplicates are dropped, the first spelling kept.
"""

from __future__ import annotations

import re

PAREN_RE = re.compile(r"\s*\([^()]*\)\s*$")
# Anchors that are link text but not names of the target ("here", "this", a bare year).
NON_NAME_ANCHOR = re.compile(r"^(?:here|this|that|link|see|more|article|page|\d{1,4}|\W*)$", re.I)
# Footnote markers and template debris that the wikitext extractor may leave as anchors: "[14", "[Note 1".
DEBRIS_ANCHOR = re.compile(r"[\[\]{}|<>=]")
MAX_ANCHORS = 20


def title_variants(title: str) -> list[str]:
    variants = [title]
    base = PAREN_RE.sub("", title).strip()
    if base and base != title:
        variants.append(base)
    if "," in base:
        head = base.split(",", 1)[0].strip()
        if len(head) >= 3:
            variants.append(head)
    return variants


def answer_aliases(title: str, redirects: list[str], anchors: list[str]) -> list[str]:
    """The alias list for an answer page (title first)."""
    out: list[str] = []
    seen: set[str] = set()
    candidates = title_variants(title) + redirects + [
        a for a in anchors
        if not NON_NAME_ANCHOR.match(a.strip()) and not DEBRIS_ANCHOR.search(a) and sum(ch.isalpha() for ch in a) >= 2][
        :MAX_ANCHORS]
    for c in candidates:
        c = re.sub(r"\s+", " ", c).strip()
        key = c.casefold()
        if c and key not in seen:
            seen.add(key)
            out.append(c)
    return out
