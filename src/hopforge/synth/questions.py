"""The questions stage: plan walk batches, compose and check questions, write shards.

What the question stage (:mod:`hopforge.synth.stage`) calls:

* :func:`plan_questions` walks blocks of ``BLOCK_SIZE`` attempts (cheap: array
  ops only) until it has ``synth.n_questions`` distinct successful walks, and
  groups their (block, attempt) coordinates into :class:`QuestionBatch` es.
* :func:`compose_batch` re-walks its blocks (deterministic in seed and block),
  joins evidence sentences and page data, composes and checks; the stage
  commits its ``walks``, ``questions`` and ``rejects`` rows as one group.

Ids are content hashes of (seed, path) and (walk id, composer), so the same
seed gives the same ids however the walks are split into batches.

Failing questions are kept in ``questions`` with ``passed = false`` (so a
``GROUP BY`` over checks works in SQL) and each failed check also writes one
``rejects`` row (stage ``questions``, step = check name, reason = its snake_case
reason).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hopforge.config import Config
from hopforge.errors import ConfigError
from hopforge.storage import content_id
from hopforge.synth.aliases import answer_aliases
from hopforge.synth.checks import run_checks
from hopforge.synth.compose import Chain, Composer, TemplateComposer
from hopforge.synth.graph_view import GraphView
from hopforge.synth.walks import STRATEGIES, Walker, WalkResult, start_weights, walk_block

log = logging.getLogger(__name__)

# Stop planning after this many consecutive blocks without a new distinct walk: the graph is exhausted.
MAX_BARREN_BLOCKS = 8


@dataclass(frozen=True)
class QuestionBatch:
    """Picklable batch descriptor: which walk attempts of which blocks become questions."""

    index: int
    seed: int
    picks: tuple[tuple[int, tuple[int, ...]], ...]  # (block, attempt indices in that block)

    @property
    def size(self) -> int:
        return sum(len(ix) for _, ix in self.picks)


class _Context:
    """Per-process cache of the loaded graph and walker (batches of one run share them)."""

    def __init__(self, cfg: Config, graph_run: str) -> None:
        self.view = GraphView.load(cfg.run.out, graph_run)
        s = cfg.synth
        self.walker: Walker = self.view.walker(s)
        self.starts = start_weights(self.walker, self.view.pagerank, self.view.revision_ts_s,
                                    s.recency_half_life_days)
        self.mix = (s.start_mix.pagerank, s.start_mix.uniform, s.start_mix.recency)
        self._blocks: dict[int, WalkResult] = {}

    def block(self, cfg: Config, b: int) -> WalkResult:
        if b not in self._blocks:
            if len(self._blocks) >= 4:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[b] = walk_block(self.walker, self.starts, self.mix, cfg.synth.hops_min,
                                         cfg.synth.hops_max, cfg.run.seed, b)
        return self._blocks[b]


_CONTEXTS: dict[tuple[str, str, str], _Context] = {}


def context(cfg: Config, graph_run: str) -> _Context:
    """The loaded graph and walker for ``graph_run`` (cached per process)."""
    key = (str(Path(cfg.run.out).resolve()), graph_run, cfg.synth.model_dump_json(), cfg.run.seed)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = _Context(cfg, graph_run)
    return _CONTEXTS[key]


def plan_questions(cfg: Config, ctx: _Context) -> list[QuestionBatch]:
    """Walk until ``n_questions`` distinct paths exist; batches of ``synth.batch_size`` questions.

    If the graph cannot yield that many distinct walks (a tiny graph, strict
    exclusions), the plan holds as many as it found and logs a warning.
    """
    need = cfg.synth.n_questions
    seen: set[bytes] = set()
    picks: list[tuple[int, int]] = []
    block, barren = 0, 0
    while len(picks) < need and barren < MAX_BARREN_BLOCKS:
        res = ctx.block(cfg, block)
        before = len(picks)
        for i in np.flatnonzero(res.ok).tolist():
            key = res.nodes[i, : res.hops[i] + 1].tobytes()
            if key not in seen:
                seen.add(key)
                picks.append((block, i))
                if len(picks) == need:
                    break
        barren = 0 if len(picks) > before else barren + 1
        block += 1
    if len(picks) < need:
        log.warning("graph yields only %d distinct walks for hops %d..%d (asked for %d)", len(picks),
                    cfg.synth.hops_min, cfg.synth.hops_max, need)
    batches = []
    size = cfg.synth.batch_size
    for bi, lo in enumerate(range(0, len(picks), size)):
        chunk = picks[lo: lo + size]
        grouped: dict[int, list[int]] = {}
        for b, i in chunk:
            grouped.setdefault(b, []).append(i)
        batches.append(QuestionBatch(bi, cfg.run.seed, tuple((b, tuple(ix)) for b, ix in grouped.items())))
    return batches


def make_composer(cfg: Config, scope: str | None = None) -> Composer:
    """The configured composer. With ``scope`` (the stage run's fingerprint) the LLM composer uses the
    run's shared teacher (started once for all batches); without it, a teacher per compose call."""
    if cfg.synth.composer == "template":
        return TemplateComposer()
    from hopforge.synth.compose_llm import LLMComposer

    try:
        from hopforge.llm.client import make_teacher  # type: ignore[attr-defined]
        from hopforge.llm.service import shared_teacher
    except ImportError as e:
        raise ConfigError("synth.composer = 'llm' needs the teacher client (hopforge.llm.client), "
                          f"which is not available: {e}") from None
    factory = (lambda: shared_teacher(cfg, scope=scope)) if scope is not None else (lambda: make_teacher(cfg))
    return LLMComposer.from_factory(factory, model=cfg.teacher.model,
                                    max_tokens=cfg.synth.llm_max_tokens, temperature=cfg.teacher.temperature,
                                    concurrency=cfg.synth.llm_concurrency)


def build_chains(cfg: Config, ctx: _Context, batch: QuestionBatch) -> tuple[list[Chain], dict[int, dict[str, Any]]]:
    """The batch's walks joined with evidence sentences, page data and aliases (see :func:`chains_from_paths`)."""
    raw = []
    for b, ix in batch.picks:
        res = ctx.block(cfg, b)
        for i in ix:
            h = int(res.hops[i])
            raw.append((res.nodes[i, : h + 1].tolist(), res.edges[i, :h].tolist(), STRATEGIES[res.strategy[i]]))
    return chains_from_paths(ctx.view, raw, cfg.run.seed)


def chains_from_paths(view: GraphView, raw: list[tuple[list[int], list[int], str]],
                      seed: int) -> tuple[list[Chain], dict[int, dict[str, Any]]]:
    """Chains for (nodes, CSR edge ids, start strategy) paths.

    Evidence for hop i is the link row joined on (page id of node i, edge
    position). Also returns the page rows of every out-neighbour of each walk's
    second-to-last entity, which the ambiguity check compares against the final clue.
    """
    path_nodes = {n for nodes, _, _ in raw for n in nodes}
    rival_nodes = {n for nodes, _, _ in raw for n in view.out_neighbours(nodes[-2]).tolist()}
    pages = view.pages(int(view.page_id[n]) for n in path_nodes | rival_nodes)
    links = view.links((int(view.page_id[nodes[j]]), int(view.edge_position[e]))
                       for nodes, edges, _ in raw for j, e in enumerate(edges))
    alias_src = view.anchors_and_redirects(int(view.page_id[n]) for n in path_nodes)
    chains = []
    for nodes, edges, strategy in raw:
        pids = [int(view.page_id[n]) for n in nodes]
        titles = [view.titles[n] for n in nodes]
        evidence = []
        for j, e in enumerate(edges):
            link = links.get((pids[j], int(view.edge_position[e]))) or {}
            evidence.append({"hop": j + 1, "src": titles[j], "dst": titles[j + 1], "anchor": link.get("anchor"),
                             "sentence": link.get("sentence")})
        answer_page = pages.get(pids[-1]) or {}
        facts = [{"key": kv["key"], "value": kv["value"]} for kv in answer_page.get("infobox") or []]
        aliases = [answer_aliases(t, alias_src.get(p, {}).get("redirects", []), alias_src.get(p, {}).get("anchors", []))
                   for t, p in zip(titles, pids, strict=True)]
        chains.append(Chain(walk_id=content_id("walk", seed, pids), seed=seed, strategy=strategy,
                            nodes=nodes, titles=titles, page_ids=pids, pages=[pages.get(p) or {} for p in pids],
                            evidence=evidence, answer_facts=facts, aliases=aliases))
    return chains, pages


def compose_batch(cfg: Config, ctx: _Context, batch: QuestionBatch, composer: Composer | None = None
                  ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Compose and check one batch; returns its rows per table (walks, questions, rejects) and stats."""
    t0 = time.perf_counter()
    composer = composer or make_composer(cfg)
    chains, pages = build_chains(cfg, ctx, batch)
    qids = [content_id("question", c.walk_id, composer.name) for c in chains]
    composed = composer.compose(chains)
    walk_rows, question_rows, reject_rows = [], [], []
    rejects: Counter[str] = Counter()
    seen_walks: set[str] = set()
    for chain, qid, comp in zip(chains, qids, composed, strict=True):
        if chain.walk_id not in seen_walks:
            seen_walks.add(chain.walk_id)
            walk_rows.append({"walk_id": chain.walk_id, "seed": chain.seed, "hops": chain.hops,
                              "start_strategy": chain.strategy, "path": chain.titles, "path_ids": chain.page_ids,
                              "evidence": chain.evidence})
        results = run_checks(comp, chain, ctx.view, pages)
        passed = all(r.passed for r in results)
        question_rows.append({
            "question_id": qid, "walk_id": chain.walk_id, "question": comp.question, "answer": comp.answer,
            "answer_aliases": chain.aliases[-1], "answer_type": comp.answer_type, "path": chain.titles,
            "hops": chain.hops, "evidence": chain.evidence, "answer_facts": chain.answer_facts,
            "composer": comp.composer, "checks": [r.row() for r in results], "passed": passed, "seed": chain.seed,
        })
        for r in results:
            if not r.passed:
                rejects[r.reason or r.name] += 1
                reject_rows.append({"stage": "questions", "step": r.name, "reason": r.reason or r.name,
                                    "row_table": "questions", "row_id": qid,
                                    "detail": f"{r.detail}; walk {chain.walk_id}: {' -> '.join(chain.titles)}"})
    stats = {"batch": batch.index, "walks": len(chains), "questions": len(question_rows),
             "passed": sum(r["passed"] for r in question_rows),
             "hops": dict(sorted(Counter(str(r["hops"]) for r in question_rows).items())), "rejects": dict(rejects),
             "seconds": round(time.perf_counter() - t0, 3)}
    return {"walks": walk_rows, "questions": question_rows, "rejects": reject_rows}, stats
