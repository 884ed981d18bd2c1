"""Question checks: each returns a :class:`CheckResult` stored in ``questions.checks``.

``answer_leak``   the answer or one of its aliases (or a walk entity's title) appears in the question.
``shortcut``      an entity named in the question links directly to the answer, or
                  a walk entity reaches the answer in at most half its remaining
                  hops (networkx BFS over the answer's local in-neighbourhood).
``single_page``   one page links to the answer and to every clue entity
                  (MuSiQue-style single-paragraph answerability).
``ambiguity``     another page linked from the second-to-last entity renders the
                  same final clue, so the answer is not unique given the graph.
``malformed``     empty, several lines, no question mark, not a question, or not English.

A failed check carries a stable snake_case ``reason`` (the rejects reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import networkx as nx

from hopforge.synth.compose import Chain, Composed
from hopforge.synth.describe import features, initial_feature, mentions_any
from hopforge.synth.graph_view import GraphView

# Local neighbourhoods above this many nodes are cut (the check then says so in its detail).
MAX_NEIGHBOURHOOD = 50_000
EN_STOP = frozenset("the of and to in a is that for it as was with by on at from this which what who whose "
                    "where when how its an be are were has have had name one".split())
QUESTION_WORD = re.compile(r"\b(?:what|which|who|whom|whose|when|where|why|how|name|identify|in what|"
                           r"is|are|was|were|did|does|do)\b", re.I)


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    reason: str | None = None  # snake_case, set when failed

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
    leaked = [a for a in chain.aliases[-1] if mentions_any(composed.question, [a])]
    if leaked:
        return CheckResult("answer_leak", False, f"question contains {leaked[0]!r}", "answer_leaked")
    # Intermediate entities must stay hidden too (by title and its variants: anchors are too generic here).
    for names, title in zip(chain.aliases[:-1], chain.titles[:-1], strict=True):
        hit = [a for a in names[:2] if mentions_any(composed.question, [a])]
        if hit:
            return CheckResult("answer_leak", False, f"question names walk entity {title!r} as {hit[0]!r}",
                               "walk_entity_named")
    return CheckResult("answer_leak", True, f"none of {len(chain.aliases[-1])} answer aliases and no walk "
                       f"entity title in the question")


def _distances_to(view: GraphView, target: int, radius: int) -> tuple[dict[int, int], bool]:
    """Hop distance of every node within ``radius`` of ``target`` along link direction (networkx BFS)."""
    g = nx.DiGraph()
    g.add_node(target)
    frontier, seen, truncated = [target], {target}, False
    for _ in range(radius):
        nxt = []
        for v in frontier:
            for u in view.in_neighbours(v).tolist():
                g.add_edge(v, u)  # reversed edge: BFS from target walks links backwards
                if u not in seen:
                    seen.add(u)
                    nxt.append(u)
        frontier = nxt
        if len(seen) > MAX_NEIGHBOURHOOD:
            truncated = True
            break
    return dict(nx.single_source_shortest_path_length(g, target, cutoff=radius)), truncated


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


def check_ambiguity(composed: Composed, chain: Chain, view: GraphView,
                    neighbour_pages: dict[int, dict[str, Any]]) -> CheckResult:
    clue = {f.text for f in composed.final_clue}
    if not clue:
        return CheckResult("ambiguity", True, "no structured final clue to compare (LLM wording)")
    prev, answer = chain.nodes[-2], chain.nodes[-1]
    rivals = []
    for c in view.out_neighbours(prev).tolist():
        if c == answer or c in chain.nodes:
            continue
        page = neighbour_pages.get(int(view.page_id[c])) or {}
        texts = {f.text for f in features(page)} | {initial_feature(view.titles[c]).text}
        if clue <= texts:
            rivals.append(view.titles[c])
    if rivals:
        return CheckResult("ambiguity", False, f"{len(rivals)} other linked page(s) fit the final clue, e.g. "
                           f"{rivals[0]!r}", "ambiguous_answer")
    return CheckResult("ambiguity", True, f"no other page linked from hop {chain.hops - 1} fits the final clue")


def check_malformed(composed: Composed) -> CheckResult:
    q = (composed.question or "").strip()
    reason, detail = None, ""
    letters = [ch for ch in q if ch.isalpha()]
    words = re.findall(r"[A-Za-z]+", q.lower())
    if not q:
        reason, detail = "empty_output", "no question text"
    elif "\n" in q:
        reason, detail = "multiple_lines", f"{q.count(chr(10)) + 1} lines"
    elif not q.endswith("?"):
        reason, detail = "no_question_mark", f"ends with {q[-20:]!r}"
    elif letters and sum(ch.isascii() for ch in letters) / len(letters) < 0.9 or \
            (len(words) >= 6 and sum(w in EN_STOP for w in words) / len(words) < 0.08):
        reason, detail = "wrong_language", "too few English letters or function words"
    elif not QUESTION_WORD.search(q):
        reason, detail = "not_a_question", "no interrogative word"
    if reason:
        return CheckResult("malformed", False, detail, reason)
    return CheckResult("malformed", True, f"{len(q)} chars, one English question")


def run_checks(composed: Composed, chain: Chain, view: GraphView,
               neighbour_pages: dict[int, dict[str, Any]]) -> list[CheckResult]:
    named = named_entities(composed.question, view)
    return [
        check_answer_leak(composed, chain),
        check_shortcut(composed, chain, view, named),
        check_single_page(composed, chain, view, named),
        check_ambiguity(composed, chain, view, neighbour_pages),
        check_malformed(composed),
    ]
