"""Offline solvability replay: can a scripted agent follow the chain in the search environment?

The replay plays the question's walk the way a careful agent would, with the tools the
rollout stage offers (``search`` over :mod:`hopforge.search`, ``visit`` of paginated page
text), and counts the turns:

* **start**: search with the start entity's clues and its fact about the next entity, then
  reformulate (the clues alone; the first two facts); the queries are built from the
  question's plan, so any composer's wording replays the same. The agent reads hits in rank
  order, so finding the start at rank r after s searches costs s + r turns.
* **each hop** i: two ways, the cheaper wins.
  *follow*: the next entity's name appears in the current page's text (the agent has read it
  for the fact); at page p of the paginated text this costs p more visits, plus one visit of
  the named page.
  *search*: search "<current title> <relation> <next entity's clues>", then shorter
  reformulations; rank r after s searches costs s + r turns.
  A hop found by neither within the top ``k`` results breaks the chain.
* **answer**: one turn.

The chain is solvable when every hop is reached and the turns stay within ``max_turns``.
Each hop's search rank is recorded even when following was cheaper, and the steps are stored
as the question's ``reference_path`` (the ``progress`` turn label can compare an agent's
trajectory against it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from hopforge.search import SearchBackend, paginate
from hopforge.synth.compose import Chain, entity_phrase, reference
from hopforge.synth.describe import is_person


@dataclass
class Step:
    hop: int  # 0 = the start entity
    title: str
    action: str | None  # search | follow | None (not reached)
    query: str
    rank: int | None  # the entity's rank for the query (even when following was cheaper)
    page: int | None  # page of the previous entity's text where its name appears (follow)
    turns: int  # turns this step cost

    def row(self) -> dict[str, object]:
        return {"hop": self.hop, "title": self.title, "action": self.action, "query": self.query,
                "rank": self.rank, "page": self.page, "turns": self.turns}


@dataclass
class Replay:
    solvable: bool
    turns: int
    steps: list[Step]
    detail: str


class Replayer:
    def __init__(self, index: SearchBackend, *, k: int = 10, max_turns: int = 30, page_chars: int = 2000) -> None:
        self.index = index
        self.k = k
        self.max_turns = max_turns
        self.page_chars = page_chars
        self._pages = lru_cache(maxsize=512)(self._paginate)

    def _paginate(self, page: int) -> tuple[str, ...]:
        return tuple(paginate(self.index.text(page), self.page_chars))

    def _name_page(self, reader: int, names: list[str]) -> int | None:
        """The first page of ``reader``'s text where one of ``names`` appears as whole words."""
        names = [n for n in names if len(n) >= 3]
        for p, text in enumerate(self._pages(reader)):
            for n in names:
                if n in text and re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text):  # substring test first: cheap
                    return p
        return None

    def queries(self, chain: Chain, i: int) -> list[str]:
        """The queries the agent tries, in order, to find entity ``i`` (built from the plan, not the
        question's wording, so every composer replays alike): its clues with the fact that ties it
        to its neighbour, then shorter reformulations."""
        plan = chain.plan
        assert plan is not None
        persons = [is_person(p) for p in chain.pages]
        phrase = [entity_phrase(plan.clues[j], persons[j]) for j in range(len(chain.nodes))]
        head = [reference(plan.head(j), persons[j]) for j in range(len(chain.nodes))]
        if i == 0:
            if not chain.hops:
                return [phrase[0]]
            out = [f"{phrase[0]} {chain.facts[0].phrase} {phrase[1]}", phrase[0]]
            if chain.hops > 1:
                out.append(f"{out[0]} {chain.facts[1].phrase} {phrase[2]}")
            return out
        prev, rel = chain.titles[i - 1], chain.facts[i - 1].phrase
        return [f"{prev} {rel} {phrase[i]}", f"{prev} {rel} {head[i]}", f"{phrase[i]} {prev}"]

    def find(self, chain: Chain, i: int) -> tuple[int | None, int, str]:
        """(best rank, searches spent, query) for entity ``i``: the queries are tried in order until one
        ranks it within the top ``k``; the rank is the best seen (None: never matched)."""
        page = self.index.index_of(chain.titles[i])
        best: int | None = None
        qs = self.queries(chain, i)
        for n, q in enumerate(qs, 1):
            r = self.index.ranks(q, [page])[0] if page is not None else None
            if r is not None and (best is None or r < best):
                best = r
            if r is not None and r <= self.k:
                return r, n, q
        return best, len(qs), qs[0]

    def find_rank(self, chain: Chain, i: int) -> int | None:
        """Entity ``i``'s best search rank over the agent's queries (None: not matched)."""
        return self.find(chain, i)[0]

    def replay(self, chain: Chain) -> Replay:
        plan = chain.plan
        assert plan is not None
        idx = [self.index.index_of(t) for t in chain.titles]
        steps: list[Step] = []
        turns = 0
        r0, n0, q0 = self.find(chain, 0)
        if r0 is None or r0 > self.k:
            steps.append(Step(0, chain.titles[0], None, q0, r0, None, 0))
            return Replay(False, turns, steps, f"start {chain.titles[0]!r} is not in the top {self.k} for its clues "
                          f"(best rank {r0})")
        turns += n0 + r0
        steps.append(Step(0, chain.titles[0], "search", q0, r0, None, n0 + r0))
        for i in range(1, chain.hops + 1):
            rank, searches, query = self.find(chain, i)
            # Names a reader would visit by: the title and its variants/redirects, not anchors.
            visit_names = [n.text for n in chain.names if n.entity == i and n.source != "anchor"] or [chain.titles[i]]
            page = self._name_page(idx[i - 1], visit_names) if idx[i - 1] is not None else None
            options = []
            if page is not None:
                options.append((page + 1, "follow"))
            if rank is not None and rank <= self.k:
                options.append((searches + rank, "search"))
            if not options:
                steps.append(Step(i, chain.titles[i], None, query, rank, page, 0))
                return Replay(False, turns, steps, f"hop {i} to {chain.titles[i]!r}: not named on "
                              f"{chain.titles[i - 1]!r} and not in the top {self.k} for its clues (best rank {rank})")
            cost, action = min(options)
            turns += cost
            steps.append(Step(i, chain.titles[i], action, query, rank, page, cost))
        turns += 1  # the answer
        if turns > self.max_turns:
            return Replay(False, turns, steps, f"the chain takes {turns} turns (limit {self.max_turns})")
        return Replay(True, turns, steps, f"followed in {turns} turns "
                      f"({', '.join(s.action or '-' for s in steps)})")
