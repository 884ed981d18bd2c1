"""Question checks: each returns a :class:`CheckResult` stored in ``questions.checks``.

==============  ==============================================================  =============================
check           fails when                                                      reject reasons
==============  ==============================================================  =============================
``answer_leak`` a name of the answer (or of another walk entity) is in the      ``answer_leaked``,
                question in any form: exact, inflected, derived                 ``walk_entity_named``
                (:mod:`hopforge.synth.leaks`)
``shortcut``    a walk entity reaches the answer in at most half its remaining  ``shortcut_path``,
                hops, or an entity named in the question links to the answer    ``named_entity_links_answer``
``single_page`` one page links to the answer and to every clue entity           ``single_page_answerable``
``certificate`` an entity has no clue fitting enough pages of the dump, or      ``no_semantic_clue``,
                more than one page fits the whole question                      ``ambiguous_answer``
                (:mod:`hopforge.synth.certificate`)
``one_shot``    the whole question, searched once, ranks the answer page in     ``one_shot_searchable``
                the top ``retrieval_k`` (:mod:`hopforge.synth.retrieval`)
``giveaway``    one clue of the question, searched alone, ranks the answer      ``giveaway_clue``
                page first
``malformed``   empty, several lines, no question mark, not a question, or      ``empty_output``,
                not in the dump's language                                      ``multiple_lines``,
                                                                                ``no_question_mark``,
                                                                                ``not_a_question``,
                                                                                ``wrong_language``
``replay``      a scripted agent cannot follow the chain in the search          ``unsolvable_offline``
                environment within the turn limit (:mod:`hopforge.synth.replay`)
==============  ==============================================================  =============================

A failed check carries a stable snake_case ``reason`` (the rejects reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hopforge.synth.certificate import QuestionPlan
from hopforge.synth.compose import Chain, Composed
from hopforge.synth.graph_view import GraphView
from hopforge.synth.leaks import Leak, find_leaks
from hopforge.synth.replay import Replay
from hopforge.synth.retrieval import Retrieval

# Local neighbourhoods above this many nodes are cut (the check then says so in its detail).
MAX_NEIGHBOURHOOD = 50_000
EN_STOP = frozenset("the of and to in a is that for it as was with by on at from this which what who whose "
                    "where when how its an be are were has have had name one".split())
QUESTION_WORD = re.compile(r"\b(?:what|which|who|whom|whose|when|where|why|how|name|identify|in what|"
                           r"is|are|was|were|did|does|do)\b", re.I)
CHECK_NAMES = ("answer_leak", "shortcut", "single_page", "certificate", "one_shot", "giveaway", "malformed", "replay")


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    reason: str | None = None  # snake_case, set when failed
    data: dict[str, Any] = field(default_factory=dict)  # what the question row stores besides the check

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def named_entities(question: str, view: GraphView) -> list[int]:
    """Graph nodes whose exact title appears in the question (word n-grams up to 6, case-sensitive).

    Single-word titles count only when capitalised and not the first word of a
    sentence, so "Start" or "Which" never match a page of that name.
    """
    tokens = [(m.group(0), m.start()) for m in re.finditer(r"[\w'’.-]+", question)]
    found: dict[int, None] = {}
    for i in range(len(tokens)):
        for n in range(1, 7):
            if i + n > len(tokens):
                break
            start = tokens[i][1]
            end = tokens[i + n - 1][1] + len(tokens[i + n - 1][0])
            span = question[start:end].rstrip(".")
            node = view.node_of_title.get(span)
            if node is None:
                continue
            if n == 1:
                before = question[:start].rstrip()
                if not span[:1].isupper() or not before or before.endswith((".", "?", "!", '"')):
                    continue
            found[node] = None
    return list(found)


def check_answer_leak(composed: Composed, chain: Chain) -> CheckResult:
    leaks = find_leaks(composed.question, chain.names)
    data = {"leaks": [lk.row() for lk in leaks]}
    answer = [lk for lk in leaks if lk.entity == chain.hops]
    if answer:
        lk = answer[0]
        return CheckResult("answer_leak", False, _leak_detail(lk, chain), "answer_leaked", data)
    if leaks:
        return CheckResult("answer_leak", False, _leak_detail(leaks[0], chain), "walk_entity_named", data)
    return CheckResult("answer_leak", True, f"no form of {len(chain.names)} names of the walk's entities in the "
                       "question", data=data)


def _leak_detail(lk: Leak, chain: Chain) -> str:
    who = "the answer" if lk.entity == chain.hops else f"walk entity {chain.titles[lk.entity]!r}"
    return f"question names {who} as {lk.found!r} ({lk.form} form of {lk.source} {lk.name!r})"


def _distances_to(view: GraphView, target: int, radius: int) -> tuple[dict[int, int], bool]:
    """Hop distance of every node within ``radius`` of ``target`` along link direction: a BFS from
    ``target`` over the reversed links, one numpy gather per level (a networkx graph built per
    question cost ~1 µs per edge and grew with the neighbourhood: 260 ms a question at 10k pages).
    Truncated (and flagged) after the level that passes MAX_NEIGHBOURHOOD nodes."""
    t_indptr, t_indices = view._transpose
    dist = {target: 0}
    frontier = np.asarray([target], np.int64)
    truncated = False
    for level in range(1, radius + 1):
        lo, hi = t_indptr[frontier], t_indptr[frontier + 1]
        sizes = hi - lo
        if not sizes.sum():
            break
        # Every in-neighbour of the frontier, gathered at once (a ragged arange over the CSR rows).
        idx = np.repeat(lo - np.r_[0, np.cumsum(sizes)[:-1]], sizes) + np.arange(int(sizes.sum()))
        new = [u for u in np.unique(t_indices[idx]).tolist() if u not in dist]
        for u in new:
            dist[u] = level
        frontier = np.asarray(new, np.int64)
        if len(dist) > MAX_NEIGHBOURHOOD:
            truncated = True
            break
        if not len(frontier):
            break
    return dist, truncated


def check_shortcut(composed: Composed, chain: Chain, view: GraphView, named: list[int]) -> CheckResult:
    k, answer = chain.hops, chain.nodes[-1]
    radius = max(1, k // 2)
    dist, truncated = _distances_to(view, answer, radius)
    for i, node in enumerate(chain.nodes[:-1]):
        limit = (k - i) // 2  # "much shorter": at most half the hops the question makes you take
        d = dist.get(node)
        if d is not None and d <= limit:
            return CheckResult("shortcut", False, f"walk entity {chain.titles[i]!r} (hop {i}) reaches the answer "
                               f"in {d} link(s) instead of {k - i}", "shortcut_path")
    for node in named:
        if node != answer and dist.get(node) == 1:
            return CheckResult("shortcut", False, f"named entity {view.titles[node]!r} links directly to the "
                               f"answer", "named_entity_links_answer")
    note = " (neighbourhood truncated)" if truncated else ""
    return CheckResult("shortcut", True, f"no entity within {radius} link(s) of the answer shortcuts the chain"
                       f"{note}")


def check_single_page(composed: Composed, chain: Chain, view: GraphView, named: list[int]) -> CheckResult:
    answer = chain.nodes[-1]
    clues = set(chain.nodes[:-1]) | (set(named) - {answer})
    candidates = set(view.in_neighbours(answer).tolist()) - {answer}
    for c in sorted(clues):
        candidates &= set(view.in_neighbours(c).tolist()) | {c}
        if not candidates:
            break
    if candidates:
        p = min(candidates)
        return CheckResult("single_page", False, f"page {view.titles[p]!r} links to the answer and all "
                           f"{len(clues)} clue entities", "single_page_answerable")
    return CheckResult("single_page", True, f"no page links to the answer and all {len(clues)} clue entities")


def check_certificate(plan: QuestionPlan, chain: Chain, min_pages: int) -> CheckResult:
    data = {"candidates": plan.candidates, "candidate_witnesses": plan.witnesses,
            "certificate": [s.row() for s in plan.stats]}
    if plan.missing:
        i = plan.missing[0]
        return CheckResult("certificate", False, f"entity {chain.titles[i]!r} (position {i}) has no clue that "
                           f"fits at least {min_pages} pages of the dump and names no walk entity",
                           "no_semantic_clue", data)
    if plan.candidates != 1:
        return CheckResult("certificate", False, f"{plan.candidates} pages fit every clue of the question, e.g. "
                           f"{', '.join(repr(w) for w in plan.witnesses[:3])}", "ambiguous_answer", data)
    loosest = min((s.candidates for s in plan.stats), default=0)
    return CheckResult("certificate", True, f"exactly one page fits the whole question; each of "
                       f"{len(plan.stats)} clues alone fits >= {loosest} pages", data=data)


def check_one_shot(r: Retrieval, k: int) -> CheckResult:
    if r.one_shot_rank is not None and r.one_shot_rank <= k:
        return CheckResult("one_shot", False, f"the whole question ranks the answer page #{r.one_shot_rank} "
                           f"(top {k})", "one_shot_searchable")
    return CheckResult("one_shot", True, f"the whole question ranks the answer page "
                       f"{'#' + str(r.one_shot_rank) if r.one_shot_rank else 'nowhere'} (cut: top {k})")


def check_giveaway(r: Retrieval) -> CheckResult:
    if r.best_clue_rank == 1:
        return CheckResult("giveaway", False, f"the clue {r.best_clue!r} alone ranks the answer page first",
                           "giveaway_clue")
    best = f"#{r.best_clue_rank} for {r.best_clue!r}" if r.best_clue_rank else "nowhere"
    return CheckResult("giveaway", True, f"best single-clue rank of the answer page: {best}")


def looks_english(q: str) -> bool:
    letters = [ch for ch in q if ch.isalpha()]
    words = re.findall(r"[A-Za-z]+", q.lower())
    if letters and sum(ch.isascii() for ch in letters) / len(letters) < 0.9:
        return False
    return not (len(words) >= 6 and sum(w in EN_STOP for w in words) / len(words) < 0.08)


def check_malformed(composed: Composed, language: str = "en") -> CheckResult:
    q = (composed.question or "").strip()
    reason, detail = None, ""
    english = language.split("-")[0] == "en"
    if not q:
        reason, detail = "empty_output", "no question text"
    elif "\n" in q:
        reason, detail = "multiple_lines", f"{q.count(chr(10)) + 1} lines"
    elif not q.endswith(("?", "？")):
        reason, detail = "no_question_mark", f"ends with {q[-20:]!r}"
    elif english and not looks_english(q):
        reason, detail = "wrong_language", "too few English letters or function words"
    elif not english and len(re.findall(r"\w+", q)) >= 6 and looks_english(q):
        reason, detail = "wrong_language", f"reads as English, not the dump's language {language!r}"
    elif english and not QUESTION_WORD.search(q):
        reason, detail = "not_a_question", "no interrogative word"
    if reason:
        return CheckResult("malformed", False, detail, reason)
    return CheckResult("malformed", True, f"{len(q)} chars, one question in {language!r}")


def check_replay(rep: Replay) -> CheckResult:
    data = {"solvable": rep.solvable, "replay_turns": rep.turns, "reference_path": [s.row() for s in rep.steps]}
    if not rep.solvable:
        return CheckResult("replay", False, rep.detail, "unsolvable_offline", data)
    return CheckResult("replay", True, rep.detail, data=data)
