"""Retrieval-difficulty gates: can the question be answered by one search?

Measured with the project's own search index over the same dump (:mod:`hopforge.search`,
the index the agent searches), so a question is judged by what the agent will see:

``one_shot_rank``   the answer page's rank when the whole question is the query;
``best_clue_rank``  the best rank the answer page gets when any single clue of the question
                    (a sentence, or a clause of one) is the query alone.

Each rank is the better of two readings of the same pages: the agent's (pages listed by their
best passage) and a page-level engine's (BM25 over whole pages, title + text: how issue 15
measured the old questions). A question must be hard for both.

A question whose answer comes up in the top ``k`` for the whole question is
``one_shot_searchable``; one with a clue that ranks the answer first on its own has a
``giveaway_clue`` (issue 15: 46 % of the old template questions had one: the answer's
Wikipedia short description named it by itself). Ranks are stored per question, so a user
can set another cut in SQL (``where one_shot_rank > 10``). A rank is null when the answer
page does not match the query at all, or ranks deeper than ``[search] rank_depth`` (1000 by
default; the config refuses a depth below the cuts, so no gate decision changes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hopforge.search import TOKEN_RE, SearchBackend

# Split points inside a sentence: punctuation and the words that open a clause.
_CLAUSE_SPLIT = re.compile(r"\s*[,;:()\"“”]\s*|\s+(?:who|which|that|whose|where|and|while|whereas)\s+", re.I)
MIN_CLUE_TOKENS = 2  # a clause with fewer content words is not a clue


def clues_of(question: str) -> list[str]:
    """The question's sentences and the clauses inside them, each once, in order."""
    out: list[str] = []
    for sentence in re.split(r"(?<=[.?!])\s+", question.strip()):
        sentence = sentence.strip().rstrip(" .?!")
        split = [p.strip(" .?!") for p in _CLAUSE_SPLIT.split(sentence) if p and p.strip(" .?!")]
        # A clause after a comma may open with its relative pronoun; a sentence's own "Who ...?" stays.
        parts = split[:1] + [re.sub(r"^(?:who|which|that|whose|where|and)\s+", "", p, flags=re.I) for p in split[1:]]
        for c in ([sentence] if len(parts) > 1 else []) + parts:
            if len(TOKEN_RE.findall(c)) >= MIN_CLUE_TOKENS and c not in out:
                out.append(c)
    return out


@dataclass
class Retrieval:
    one_shot_rank: int | None
    best_clue_rank: int | None
    best_clue: str | None
    clue_ranks: list[tuple[str, int | None]]


def _better(a: int | None, b: int | None) -> bool:
    return a is not None and (b is None or a < b)


def rank(index: SearchBackend, query: str, page: int) -> int | None:
    """The page's best rank for ``query``: as the agent's passage search lists it, or as a page-level
    engine would rank whole pages, whichever is higher."""
    a = index.ranks(query, [page])[0]
    b = index.ranks(query, [page], whole_pages=True)[0]
    return min((r for r in (a, b) if r is not None), default=None)


def measure(question: str, answer_page: int | None, index: SearchBackend) -> Retrieval:
    """Ranks of the answer page (an index into ``index.titles``) for the question and for each clue."""
    if answer_page is None:
        return Retrieval(None, None, None, [])
    one_shot = rank(index, question, answer_page)
    best, best_clue, ranks = None, None, []
    for clue in clues_of(question):
        r = rank(index, clue, answer_page)
        ranks.append((clue, r))
        if _better(r, best):
            best, best_clue = r, clue
    return Retrieval(one_shot, best, best_clue, ranks)
