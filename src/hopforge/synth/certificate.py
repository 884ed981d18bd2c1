"""The question plan: which clues describe each entity, and a certificate that the answer is unique.

For a walk e0 -> e1 -> ... -> ek, a question says "some e0 fits clues C0; it <relation 1>
some e1 that fits C1; ... which ek fits Ck?". The **certificate** is computed over the whole
dump, not over the previous hop's neighbours:

* per clue: the pages that satisfy it alone (:class:`~hopforge.synth.clue_index.ClueIndex`), and
  a few witness titles other than the entity itself;
* for the whole question: candidates(e0) = pages fitting C0; candidates(e_i) = pages fitting
  C_i that are linked (either way) with a candidate of e_(i-1). The answer candidates are
  candidates(ek).

A linked pair stands for "the relation holds": a fact the dump states is stated on one of
the two pages with a link between them, so the link graph over-approximates every relation
and the candidate sets are supersets of the pages a careful reader could not rule out. One
answer candidate therefore certifies uniqueness in the dump.

A plan is kept only when exactly one page (the answer) survives and every clue alone fits at
least ``min_clue_pages`` pages (BrowseComp style: each clue is under-informative, only their
conjunction pins the answer). Clues are chosen greedily: each entity's most specific usable
clue as its head noun, then one qualifier at a time where it shrinks the answer's candidates
most (preferring entities other than the answer, whose clues would otherwise make the answer
searchable on its own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from hopforge.synth.clue_index import ClueIndex
from hopforge.synth.clues import Clue, page_clues
from hopforge.synth.leaks import Name, mentions

WITNESSES = 3
# Clues an entity may carry: the start and intermediates are described briefly, the answer more.
MAX_CLUES = {"start": 3, "middle": 3, "answer": 3}
# Usable clues considered per entity (most specific first): bounds the greedy search.
MAX_OPTIONS = 10


@dataclass
class ClueStat:
    entity: int
    clue: Clue
    candidates: int  # pages of the dump that satisfy the clue alone
    witnesses: list[str]  # some of them, other than the entity

    def row(self) -> dict[str, object]:
        return {"entity": self.entity, "clue": self.clue.text, "kind": self.clue.source,
                "candidates": self.candidates, "witnesses": self.witnesses}


@dataclass
class QuestionPlan:
    """What a composer may say: per entity its clues, per hop its relation; and the certificate."""

    clues: list[list[Clue]]
    candidates: int  # answer candidates: pages fitting the whole question
    witnesses: list[str]  # titles of (some of) them
    stats: list[ClueStat] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  # entities with no usable semantic clue
    too_specific: list[ClueStat] = field(default_factory=list)  # chosen clues under min_clue_pages

    def head(self, i: int) -> Clue | None:
        return next((c for c in self.clues[i] if c.kind == "noun"), None)


class Certifier:
    """Plans clues for chains and certifies them against a clue index over the dump's graph."""

    def __init__(self, n_nodes: int, indptr: np.ndarray, indices: np.ndarray, titles: list[str], index: ClueIndex,
                 min_clue_pages: int = 5) -> None:
        a = sp.csr_matrix((np.ones(len(indices), np.int8), np.asarray(indices), np.asarray(indptr)),
                          shape=(n_nodes, n_nodes))
        self.adj = ((a + a.T) > 0).astype(np.int8).tocsr()
        self.n = n_nodes
        self.titles = titles
        self.index = index
        self.min_clue_pages = min_clue_pages

    # ------------------------------------------------------------------ sets

    def _mask(self, clues: list[Clue]) -> np.ndarray:
        m = np.ones(self.n, bool)
        for c in clues:
            sel = np.zeros(self.n, bool)
            sel[self.index.nodes(c.key)] = True
            m &= sel
        return m

    def _propagate(self, masks: list[np.ndarray], start: int = 0, prev: np.ndarray | None = None
                   ) -> list[np.ndarray]:
        """Candidates per entity, from entity ``start`` on (``prev``: candidates of ``start - 1``)."""
        out = []
        for i in range(start, len(masks)):
            cur = masks[i] if prev is None else masks[i] & (self.adj.dot(prev.astype(np.int8)) > 0)
            out.append(cur)
            prev = cur
        return out

    def candidates(self, clues: list[list[Clue]]) -> np.ndarray:
        """Nodes fitting the whole question (the answer's candidates)."""
        return self._propagate([self._mask(c) for c in clues])[-1]

    # ------------------------------------------------------------------ planning

    def options(self, node: int, page: dict, names: list[Name]) -> list[Clue]:
        """Usable clues of one entity, most specific first: under-informative enough alone and naming
        no walk entity in any form."""
        usable = [c for c in page_clues(page) if self.index.count(c.key) >= self.min_clue_pages
                  and not mentions(c.text, names)]
        usable.sort(key=lambda c: (self.index.count(c.key), c.kind != "noun"))
        return usable

    def plan(self, nodes: list[int], pages: list[dict], names: list[Name],
             answer_ok: Callable[[Clue], bool] | None = None) -> QuestionPlan:
        """Clues for a walk's entities and their certificate; ``answer_ok`` vetoes clues of the answer
        (the stage passes "does not find the answer page first on its own": a give-away)."""
        k = len(nodes) - 1
        options = [self.options(n, p, names)[:MAX_OPTIONS * 2] for n, p in zip(nodes, pages, strict=True)]
        if answer_ok is not None:
            options[k] = [c for c in options[k] if answer_ok(c)]
        chosen: list[list[Clue]] = []
        missing = []
        for i, opts in enumerate(options):
            head = next((c for c in opts if c.kind == "noun"), None) or (opts[0] if opts else None)
            if head is None:
                missing.append(i)
            chosen.append([head] if head else [])
        masks = [self._mask(c) for c in chosen]
        cands = self._propagate(masks)
        limits = [MAX_CLUES["start"]] + [MAX_CLUES["middle"]] * (k - 1) + [MAX_CLUES["answer"]]
        while int(cands[-1].sum()) > 1:
            best: tuple[tuple[int, int, int], int, Clue, np.ndarray] | None = None
            for i, opts in enumerate(options):
                if len(chosen[i]) >= limits[i]:
                    continue
                for c in opts[:MAX_OPTIONS]:
                    if c in chosen[i]:
                        continue
                    m = masks[i] & self._mask([c])
                    if m.sum() == masks[i].sum():  # implied by what is chosen ("band" after "rock band")
                        continue
                    tail = self._propagate(masks[:i] + [m] + masks[i + 1:], i, cands[i - 1] if i else None)
                    score = (int(tail[-1].sum()), int(i == k), i)
                    if best is None or score < best[0]:
                        best = (score, i, c, m)
            if best is None or best[0][0] >= int(cands[-1].sum()):
                break
            _, i, c, m = best
            chosen[i].append(c)
            masks[i] = m
            cands = cands[:i] + self._propagate(masks, i, cands[i - 1] if i else None)
        return self._certified(nodes, chosen, missing, cands[-1])

    def certify(self, nodes: list[int], clues: list[list[Clue]], missing: list[int] | None = None) -> QuestionPlan:
        """The certificate of given clues (no choosing)."""
        return self._certified(nodes, clues, list(missing or []), self.candidates(clues))

    def _certified(self, nodes: list[int], chosen: list[list[Clue]], missing: list[int], answer_mask: np.ndarray
                   ) -> QuestionPlan:
        final = np.flatnonzero(answer_mask)
        stats = [self._stat(i, c, nodes[i]) for i, cs in enumerate(chosen) for c in cs]
        return QuestionPlan(clues=chosen, candidates=len(final), witnesses=[self.titles[j] for j in final[:5]],
                            stats=stats, missing=missing,
                            too_specific=[s for s in stats if s.candidates < self.min_clue_pages])

    def _stat(self, i: int, clue: Clue, node: int) -> ClueStat:
        fit = self.index.nodes(clue.key)
        others = [self.titles[j] for j in fit[:WITNESSES + 1].tolist() if j != node][:WITNESSES]
        return ClueStat(i, clue, len(fit), others)
