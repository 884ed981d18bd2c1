"""Question composition: a walk's chain in, one obfuscated multi-hop question out.

Two interchangeable composers implement :class:`Composer`: the deterministic
:class:`TemplateComposer` here (no model; the default) and
:class:`hopforge.synth.compose_llm.LLMComposer` (a teacher model rewrites the
chain). Both answer with the final entity of the walk and never name the
walk's entities; the checks in :mod:`hopforge.synth.checks` verify it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from hopforge.synth.describe import Feature, describe, is_person, kind_noun, mentions_any, vague_dates

STOP = frozenset("a an the of in on at to for and or by with from as is was were be been its it his her their "
                 "that which who this these those also".split())


@dataclass
class Chain:
    """One walk with everything a composer and the checks need."""

    walk_id: str
    seed: int
    strategy: str
    nodes: list[int]  # CSR rows, start to answer
    titles: list[str]
    page_ids: list[int]
    pages: list[dict[str, Any]]  # page rows (no text); {} when a page row is missing
    evidence: list[dict[str, Any]]  # EVIDENCE rows, hop 1..k
    answer_facts: list[dict[str, str]]
    aliases: list[list[str]]  # per path entity; aliases[-1] are the answer's

    @property
    def hops(self) -> int:
        return len(self.nodes) - 1

    @property
    def answer(self) -> str:
        return self.titles[-1]

    @property
    def scrub(self) -> list[str]:
        """Every surface form of every entity on the path: none may appear in the question."""
        return [a for names in self.aliases for a in names]


@dataclass
class Composed:
    question: str
    answer: str
    answer_type: str  # entity | fact
    composer: str
    final_clue: list[Feature] = field(default_factory=list)  # how the answer is described (ambiguity check)
    raw: str | None = None  # model output, for the malformed check and debugging


class Composer(Protocol):
    name: str

    def compose(self, chains: list[Chain]) -> list[Composed]:
        """One result per chain, in order."""
        ...


def relation_phrase(evidence: dict[str, Any], scrub: list[str]) -> str | None:
    """Up to four lowercase words right before the link's anchor ("born in", "capital of").

    Stops at punctuation, digits and capitalised words (names), and returns None
    when nothing but stop words is left: then the hop is stated without it.
    """
    sentence, anchor = evidence.get("sentence") or "", evidence.get("anchor") or ""
    i = sentence.find(anchor) if anchor else -1
    if i <= 0:
        return None
    words: list[str] = []
    for tok in reversed(re.findall(r"[\w'’-]+|[^\w\s]", sentence[:i])):
        if not re.fullmatch(r"[a-z][a-z'’-]*", tok) or len(words) == 4:
            break
        words.insert(0, tok)
    while words and words[0] in {"and", "or", "but", "which", "who", "that"}:
        words.pop(0)
    if not words or all(w in STOP for w in words):
        return None
    phrase = " ".join(words)
    return None if mentions_any(phrase, scrub) else phrase


def _pick(walk_id: str, n: int, salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}:{walk_id}".encode(), digest_size=4).digest(), "big") % n


OPENINGS = ("Start from {d}.", "Consider {d}.", "Begin with {d}.")
CLOSINGS = ("What is the name of this {k}?", "Which {k} is this?", "Name this {k}: what is it called?")
PERSON_CLOSINGS = ("Who is this {k}?", "What is the name of this {k}?", "Who is this person?")


class TemplateComposer:
    """Deterministic composer: a chain of obfuscated descriptions joined by link relations.

    Example shape (2 hops): "Start from a city in Texas (founded in the early
    1870s). Its article links, with the words "born in …", to an American
    singer-songwriter. The article on that one links, with the words "member
    of …", to a musical group (formed in the late 1990s). What is the name of
    this musical group?"  The start is described by two features, intermediate
    entities by one, the answer by two plus a partial name when it has few
    features, so the final clue is specific enough to pin one entity.
    """

    name = "template"

    def compose(self, chains: list[Chain]) -> list[Composed]:
        return [self.compose_one(c) for c in chains]

    def compose_one(self, chain: Chain) -> Composed:
        scrub = chain.scrub
        k = chain.hops
        d0, _ = describe(chain.pages[0], chain.titles[0], scrub, n=2)
        parts = [OPENINGS[_pick(chain.walk_id, len(OPENINGS), "open")].format(d=d0)]
        for i in range(1, k + 1):
            ev = chain.evidence[i - 1]
            rel = relation_phrase(ev, scrub)
            how = f'links, with the words "{rel} …", to' if rel else "links to"
            subject = "Its article" if i == 1 else "The article on that one"
            if i < k:
                d, _ = describe(chain.pages[i], chain.titles[i], scrub, n=1)
                parts.append(f"{subject} {how} {d}.")
            else:
                answer_page = chain.pages[-1]
                d, clue = describe(answer_page, chain.titles[-1], scrub, n=2)
                if len(clue) < 2:  # a lone feature rarely pins one entity; add the partial name
                    d, clue = describe(answer_page, chain.titles[-1], scrub, n=2, with_initial=True)
                parts.append(f"{subject} {how} {d}.")
                kind = kind_noun(answer_page)
                if mentions_any(kind, scrub):  # "Which country ...?" must not echo a walk entity "Country music"
                    kind = "person" if is_person(answer_page) else "entity"
                closings = PERSON_CLOSINGS if is_person(answer_page) else CLOSINGS
                parts.append(closings[_pick(chain.walk_id, len(closings), "close")].format(k=kind))
        question = vague_dates(" ".join(parts))
        return Composed(question=question, answer=chain.answer, answer_type="entity", composer=self.name,
                        final_clue=clue)
