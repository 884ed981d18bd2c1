"""Question composition: a walk's chain and its plan in, one question out.

Two interchangeable composers implement :class:`Composer`: the deterministic
:class:`TemplateComposer` here (no model; English only) and
:class:`hopforge.synth.compose_llm.LLMComposer` (a teacher model writes the question in the
dump's language). Both say only what the chain's :class:`~hopforge.synth.certificate.QuestionPlan`
allows: each entity through its planned clues, each hop through the fact its evidence
states (:mod:`hopforge.synth.relations`), never "its article links to". The checks in
:mod:`hopforge.synth.checks` verify the result the same way for both.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hopforge.synth.describe import is_person, vague_dates

if TYPE_CHECKING:
    from hopforge.synth.certificate import QuestionPlan
    from hopforge.synth.clues import Clue
    from hopforge.synth.factgraph import Fact
    from hopforge.synth.leaks import Name


@dataclass
class Chain:
    """One walk with everything a composer and the checks need."""

    walk_id: str
    seed: int
    strategy: str
    nodes: list[int]  # graph nodes, start to answer
    titles: list[str]
    page_ids: list[int]
    pages: list[dict[str, Any]]  # page rows (no text); {} when a page row is missing
    evidence: list[dict[str, Any]]  # EVIDENCE rows, hop 1..k (the sentence stating each hop's fact)
    answer_facts: list[dict[str, str]]
    aliases: list[list[str]]  # per path entity; aliases[-1] are the answer's
    facts: list[Fact] = field(default_factory=list)  # per hop: the fact relating entity i-1 to entity i
    names: list[Name] = field(default_factory=list)  # every form of every entity the question must not name
    plan: QuestionPlan | None = None

    @property
    def hops(self) -> int:
        return len(self.nodes) - 1

    @property
    def answer(self) -> str:
        return self.titles[-1]


@dataclass
class Composed:
    question: str
    answer: str
    answer_type: str  # entity | fact
    composer: str
    raw: str | None = None  # model output, for the malformed check and debugging
    language: str = "en"  # the language the question was asked in


class Composer(Protocol):
    name: str

    def compose(self, chains: list[Chain]) -> list[Composed]:
        """One result per chain (each with its plan), in order."""
        ...


def _pick(walk_id: str, n: int, salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}:{walk_id}".encode(), digest_size=4).digest(), "big") % n


_CLAUSE_OF_HEAD = re.compile(r"\s+(?:of|in|at|on|for|from|to|within|near|beside|along|across|around|outside|"
                             r"inside|among|under|over|between|who|which|that|with|by)\s.*$")


def reference(head: Clue | None, person: bool) -> str:
    """The noun later sentences use for an entity: the last word of its head noun ("group" for "a
    rock musical group", "president" for "a president of the United States"), else "person" or
    "one". Short, so a question does not repeat its clues (a repeated clue is also a stronger
    search query)."""
    if head is None or head.kind != "noun":
        return "person" if person else "one"
    noun = _CLAUSE_OF_HEAD.sub("", head.head).split()
    return noun[-1] if noun else ("person" if person else "one")


def entity_phrase(clues: list[Clue], person: bool) -> str:
    """The planned clues of one entity as one noun phrase: the head noun, its dated facts, then
    further kinds and "who ..." facts as one relative clause ("a singer born in the mid-1940s who
    is a Brit Award winner and died in the 2010s")."""
    head = next((c for c in clues if c.kind == "noun"), None)
    text = head.text if head else ("a person" if person else "an entity")
    facts = [c.text for c in clues if c.kind == "fact" and not c.text.startswith("who ")]
    if facts:
        text += " " + " and ".join(facts)
    relative = [f"is {c.text}" for c in clues if c.kind == "noun" and c is not head] + \
        [c.text.removeprefix("who ") for c in clues if c.kind == "fact" and c.text.startswith("who ")]
    if relative:
        text += (" who " if person else " that ") + " and ".join(relative)
    return text


OPENINGS = ("Consider {d}.", "Think of {d}.", "There is {d}.")
CLOSINGS = ("What is the name of this {k}?", "Which {k} is this?", "What is this {k} called?")
PERSON_CLOSINGS = ("Who is this {k}?", "What is the name of this {k}?", "Who is this?")


class TemplateComposer:
    """Deterministic English composer: one sentence per fact of the chain.

    Example (2 hops): "Consider a rock band active in the 1970s. This rock band worked with a
    singer born in the 1940s who is a Brit Award winner. That singer was born in a city that
    is a capital. Which city is this?" Each entity is said through its planned clues (each of
    which fits several pages of the dump alone), each hop through the relation its evidence
    sentence states.
    """

    name = "template"

    def compose(self, chains: list[Chain]) -> list[Composed]:
        return [self.compose_one(c) for c in chains]

    def compose_one(self, chain: Chain) -> Composed:
        plan = chain.plan
        if plan is None:
            raise ValueError(f"walk {chain.walk_id}: no question plan (the stage plans every chain before composing)")
        persons = [is_person(p) for p in chain.pages]
        refs = [reference(plan.head(i), persons[i]) for i in range(len(chain.nodes))]
        parts = [OPENINGS[_pick(chain.walk_id, len(OPENINGS), "open")].format(d=entity_phrase(plan.clues[0],
                                                                                                persons[0]))]
        for i in range(1, chain.hops + 1):
            det = "This" if i == 1 else "That"
            parts.append(f"{det} {refs[i - 1]} {chain.facts[i - 1].phrase} {entity_phrase(plan.clues[i], persons[i])}.")
        closings = PERSON_CLOSINGS if persons[-1] else CLOSINGS
        kind = refs[-1] if refs[-1] != "one" else "entity"
        parts.append(closings[_pick(chain.walk_id, len(closings), "close")].format(k=kind))
        question = vague_dates(" ".join(parts))
        return Composed(question=question, answer=chain.answer, answer_type="entity", composer=self.name)
