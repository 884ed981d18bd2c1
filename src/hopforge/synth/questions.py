"""The questions stage: plan walk batches, compose and check questions, write shards.

What the question stage (:mod:`hopforge.synth.stage`) calls:

* :func:`plan_questions` walks blocks of ``BLOCK_SIZE`` attempts (cheap: array
  ops only) over the fact graph (:mod:`hopforge.synth.factgraph`) until it has
  ``synth.n_questions`` distinct successful walks, and groups their (block,
  attempt) coordinates into :class:`QuestionBatch` es.
* :func:`compose_batch` re-walks its blocks (deterministic in seed and block),
  joins each hop's fact, page data and aliases, plans each question's clues with
  a uniqueness certificate over the dump, composes, and runs the checks
  (:mod:`hopforge.synth.checks`); the stage commits its ``walks``, ``questions``
  and ``rejects`` rows as one group.

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
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hopforge.config import Config
from hopforge.errors import ConfigError
from hopforge.search import SearchBackend, open_index
from hopforge.storage import content_id
from hopforge.synth.aliases import answer_aliases, title_variants
from hopforge.synth.certificate import Certifier
from hopforge.synth.checks import (
    check_answer_leak,
    check_certificate,
    check_giveaway,
    check_malformed,
    check_one_shot,
    check_replay,
    check_shortcut,
    check_single_page,
    named_entities,
)
from hopforge.synth.clue_index import ClueIndex, cached_clue_index
from hopforge.synth.clues import Clue, page_clues
from hopforge.synth.compose import Chain, Composed, Composer, TemplateComposer
from hopforge.synth.factgraph import LINK_COLUMNS, FactGraph, build_fact_graph, cached_fact_graph
from hopforge.synth.graph_view import GraphView, _dataset
from hopforge.synth.language import dump_language
from hopforge.synth.leaks import walk_names
from hopforge.synth.page_rows import page_rows
from hopforge.synth.replay import Replayer
from hopforge.synth.retrieval import measure, rank
from hopforge.synth.walks import (
    STRATEGIES,
    Walker,
    WalkResult,
    start_weights,
    walk_block,
)

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
    """Per-process cache of what every batch of one run shares: the graph, every page's clues,
    the fact graph and its walker, the certifier, and (on first use) the search index. The
    dump-wide parts are memory-mapped from the graph run's caches under ``OUT/_cache``."""

    def __init__(self, cfg: Config, graph_run: str) -> None:
        self.out = Path(cfg.run.out)
        self.search_cfg = cfg.search
        self.view = GraphView.load(cfg.run.out, graph_run)
        s = cfg.synth
        view = self.view
        # Page rows (no text), the clue index and the fact graph are built once per graph run and
        # memory-mapped from OUT/_cache by every process after that (hopforge.synth.cache).
        self.all_pages = page_rows(view.out, view.run)

        def build_clues() -> ClueIndex:
            node_of_page = view.node_of_page
            return ClueIndex.build(view.n_nodes, ((node_of_page[row["page_id"]], [c.key for c in page_clues(row)])
                                                  for chunk in self.all_pages.chunks() for row in chunk
                                                  if row["page_id"] in node_of_page))

        self.clues = cached_clue_index(view.out, view.run, view.n_nodes, build_clues)
        has_clue = self.clues.nodes_with_a_clue(s.min_clue_pages)

        def build_facts() -> FactGraph:
            links = _dataset(view.out, "links", view.run)
            return build_fact_graph(view.n_nodes, view.node_of_page, view.titles,
                                    links if links is not None else _no_links(), self.all_pages,
                                    spill_dir=self.out / "_cache")

        self.facts: FactGraph = cached_fact_graph(view.out, view.run, view.n_nodes, build_facts)
        # Walks take only hops that read as facts, through pages with a clue that fits enough pages.
        self.walker: Walker = Walker(self.facts.indptr, self.facts.indices, self.facts.in_lead,
                                     view.allowed(s) & has_clue, s.lead_link_weight)
        self.starts = start_weights(self.walker, view.pagerank, view.revision_ts_s, s.recency_half_life_days)
        self.mix = (s.start_mix.pagerank, s.start_mix.uniform, s.start_mix.recency)
        self.certifier = Certifier(view.n_nodes, view.indptr, view.indices, view.titles, self.clues,
                                   s.min_clue_pages)
        self.language = dump_language(cfg.graph.dump, s.language)
        self._blocks: dict[int, WalkResult] = {}
        self._replayer: Replayer | None = None
        self.giveaways: dict[tuple[int, str], bool] = {}  # (answer page, clue text) -> ranks it first alone

    @cached_property
    def search(self) -> SearchBackend:
        """The BM25 index the agent searches (shared cache under OUT/_cache with the rollout stage)."""
        return open_index(self.out, self.view.run, self.search_cfg)

    def replayer(self, cfg: Config) -> Replayer:
        if self._replayer is None:
            s = cfg.synth
            self._replayer = Replayer(self.search, k=s.replay_k, max_turns=s.replay_max_turns,
                                      page_chars=s.replay_page_chars)
        return self._replayer

    def block(self, cfg: Config, b: int) -> WalkResult:
        if b not in self._blocks:
            if len(self._blocks) >= 4:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[b] = walk_block(self.walker, self.starts, self.mix, cfg.synth.hops_min,
                                         cfg.synth.hops_max, cfg.run.seed, b)
        return self._blocks[b]


def _no_links() -> Any:
    from hopforge.storage import schema_for

    return schema_for("links").empty_table().select(LINK_COLUMNS)


_CONTEXTS: dict[tuple[str, str, str, int], _Context] = {}


def context(cfg: Config, graph_run: str) -> _Context:
    """The loaded graph, clues, fact graph and walker for ``graph_run`` (cached per process)."""
    key = (str(Path(cfg.run.out).resolve()), graph_run, cfg.synth.model_dump_json() + cfg.graph.dump, cfg.run.seed)
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = _Context(cfg, graph_run)
    return _CONTEXTS[key]


def check_language(cfg: Config) -> str:
    """The language questions are asked in; the template composer refuses any but English."""
    lang = dump_language(cfg.graph.dump, cfg.synth.language)
    if cfg.synth.composer == "template" and lang.split("-")[0] != "en":
        raise ConfigError(f"synth.composer = 'template' writes English questions only, but the dump's language is "
                          f"{lang!r} (its <siteinfo>); use synth.composer = 'llm' (hopforge questions --composer llm) "
                          "to ask in that language")
    return lang


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


def make_composer(cfg: Config, scope: str | None = None, language: str | None = None) -> Composer:
    """The configured composer, asking in ``language`` (default: the dump's). With ``scope`` (the stage
    run's fingerprint) the LLM composer uses the run's shared teacher (started once for all batches);
    without it, a teacher per compose call."""
    if cfg.synth.composer == "template":
        return TemplateComposer()
    from hopforge.synth.compose_llm import LLMComposer

    try:
        from hopforge.llm.client import make_teacher
        from hopforge.llm.service import shared_teacher
    except ImportError as e:
        raise ConfigError("synth.composer = 'llm' needs the teacher client (hopforge.llm.client), "
                          f"which is not available: {e}") from None
    factory = (lambda: shared_teacher(cfg, scope=scope)) if scope is not None else (lambda: make_teacher(cfg))
    return LLMComposer.from_factory(factory, model=cfg.teacher.model,
                                    max_tokens=cfg.synth.llm_max_tokens, temperature=cfg.teacher.temperature,
                                    concurrency=cfg.synth.llm_concurrency,
                                    language=language or dump_language(cfg.graph.dump, cfg.synth.language))


def build_chains(cfg: Config, ctx: _Context, batch: QuestionBatch) -> list[Chain]:
    """The batch's walks joined with facts, page data and aliases (see :func:`chains_from_paths`)."""
    raw = []
    for b, ix in batch.picks:
        res = ctx.block(cfg, b)
        for i in ix:
            h = int(res.hops[i])
            raw.append((res.nodes[i, : h + 1].tolist(), res.edges[i, :h].tolist(), STRATEGIES[res.strategy[i]]))
    return chains_from_paths(ctx, raw, cfg.run.seed)


def chains_from_paths(ctx: _Context, raw: list[tuple[list[int], list[int], str]], seed: int) -> list[Chain]:
    """Chains for (nodes, fact-graph edge ids, start strategy) paths.

    Hop i's evidence is the link row its fact comes from (an infobox field or a prose
    sentence, on the page that states the fact); the answer's infobox becomes
    ``answer_facts``; aliases come from titles, redirects and anchor texts.
    """
    view, facts = ctx.view, ctx.facts
    path_nodes = {n for nodes, _, _ in raw for n in nodes}
    alias_src = view.anchors_and_redirects(int(view.page_id[n]) for n in path_nodes)
    chains = []
    for nodes, edges, strategy in raw:
        pids = [int(view.page_id[n]) for n in nodes]
        titles = [view.titles[n] for n in nodes]
        hop_facts = [facts.facts[e] for e in edges]
        evidence = [{"hop": j + 1, "src": titles[j], "dst": titles[j + 1], "anchor": f.anchor, "sentence": f.sentence}
                    for j, f in enumerate(hop_facts)]
        pages = [ctx.all_pages.get(p) or {} for p in pids]
        facts_rows = [{"key": kv["key"], "value": kv["value"]} for kv in pages[-1].get("infobox") or []]
        aliases, sources = [], []
        for t, p in zip(titles, pids, strict=True):
            red = alias_src.get(p, {}).get("redirects", [])
            aliases.append(answer_aliases(t, red, alias_src.get(p, {}).get("anchors", [])))
            src = dict.fromkeys(alias_src.get(p, {}).get("anchors", []), "anchor")
            src.update(dict.fromkeys(red, "redirect"))
            src.update(dict.fromkeys(title_variants(t), "title"))
            sources.append(src)
        chains.append(Chain(walk_id=content_id("walk", seed, pids), seed=seed, strategy=strategy,
                            nodes=nodes, titles=titles, page_ids=pids, pages=pages, evidence=evidence,
                            answer_facts=facts_rows, aliases=aliases, facts=hop_facts,
                            names=walk_names(titles, aliases, sources)))
    return chains


# Extra clues the replay may give an entity it cannot find (on top of the certificate's).
MAX_FINDABILITY_CLUES = 3


def plan_chains(cfg: Config, ctx: _Context, chains: list[Chain]) -> None:
    """Plan every chain (sets ``chain.plan``; see :func:`plan_chain`)."""
    for c in chains:
        plan_chain(cfg, ctx, c)


def plan_chain(cfg: Config, ctx: _Context, c: Chain, veto: frozenset[str] = frozenset()) -> None:
    """Choose the chain's clues and certify its answer (sets ``chain.plan``).

    The answer never gets a clue that alone ranks its page first in the search index (a
    give-away), nor one in ``veto`` (clue texts a failed gate blamed). Then the chain is made
    followable: where the offline replay cannot find an entity from its clues (or spends the
    most turns on it), the entity gets the usable clue that ranks it best, up to
    :data:`MAX_FINDABILITY_CLUES` per chain. More clues only shrink the candidate sets, so the
    certificate is recomputed, never weakened."""
    replayer = ctx.replayer(cfg)
    answer = ctx.search.index_of(c.answer)

    def answer_ok(clue: Clue) -> bool:
        if clue.text in veto:
            return False
        if answer is None:
            return True
        key = (answer, clue.text)
        if key not in ctx.giveaways:
            ctx.giveaways[key] = rank(ctx.search, clue.text, answer) == 1
        return not ctx.giveaways[key]

    c.plan = ctx.certifier.plan(c.nodes, c.pages, c.names, answer_ok)
    for _ in range(MAX_FINDABILITY_CLUES):
        rep = replayer.replay(c)
        if rep.solvable or not rep.steps:
            break
        # The entity the replay could not find, or else the one that cost it the most turns.
        step = rep.steps[-1] if rep.steps[-1].action is None else max(rep.steps, key=lambda st: st.turns)
        i = step.hop
        have = " | ".join(x.text.lower() for x in c.plan.clues[i])
        options = [o for o in ctx.certifier.options(c.nodes[i], c.pages[i], c.names)
                   if o not in c.plan.clues[i] and o.head.lower() not in have  # "writer" after "political writer"
                   and not any(x.head.lower() in o.text.lower() for x in c.plan.clues[i])
                   and (i < c.hops or answer_ok(o))]
        best = None
        for o in options[:6]:
            c.plan.clues[i].append(o)
            r = replayer.find_rank(c, i)
            c.plan.clues[i].pop()
            if r is not None and (best is None or r < best[0]):
                best = (r, o)
        if best is None or (step.rank is not None and best[0] >= step.rank):
            break
        c.plan = ctx.certifier.certify(c.nodes, [*c.plan.clues[:i], [*c.plan.clues[i], best[1]],
                                                 *c.plan.clues[i + 1:]], c.plan.missing)


# Re-plans of a template question whose retrieval gate failed, each vetoing the answer clues it blamed.
MAX_REPLANS = 2


def blamed(chain: Chain, cols: dict[str, Any], results: list[Any]) -> set[str]:
    """Answer clues to veto after a failed retrieval gate: those in the give-away clause, else (a
    one-shot question) the answer's most specific clue."""
    assert chain.plan is not None
    failed = {r.name for r in results if not r.passed}
    clues = chain.plan.clues[-1]
    out: set[str] = set()
    if "giveaway" in failed and cols.get("best_clue"):
        out |= {c.text for c in clues if c.head.lower() in cols["best_clue"].lower()}
    if ("one_shot" in failed or ("giveaway" in failed and not out)) and clues:
        stats = {s.clue.text: s.candidates for s in chain.plan.stats if s.entity == chain.hops}
        out.add(min(clues, key=lambda c: stats.get(c.text, 0)).text)
    return out


def check_question(cfg: Config, ctx: _Context, chain: Chain, comp: Composed) -> tuple[list[Any], dict[str, Any]]:
    """Every check of one composed question, and the quality columns of its row."""
    s = cfg.synth
    assert chain.plan is not None
    named = named_entities(comp.question, ctx.view)
    retrieval = measure(comp.question, ctx.search.index_of(chain.answer), ctx.search)
    replay = ctx.replayer(cfg).replay(chain)
    results = [check_answer_leak(comp, chain), check_shortcut(comp, chain, ctx.view, named),
               check_single_page(comp, chain, ctx.view, named), check_certificate(chain.plan, chain, s.min_clue_pages),
               check_one_shot(retrieval, s.retrieval_k), check_giveaway(retrieval),
               check_malformed(comp, comp.language), check_replay(replay)]
    cols: dict[str, Any] = {"one_shot_rank": retrieval.one_shot_rank, "best_clue_rank": retrieval.best_clue_rank,
                            "best_clue": retrieval.best_clue,
                            "clue_ranks": [{"clue": c, "rank": r} for c, r in retrieval.clue_ranks]}
    for r in results:
        cols.update(r.data)
    return results, cols


def compose_batch(cfg: Config, ctx: _Context, batch: QuestionBatch, composer: Composer | None = None
                  ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Compose and check one batch; returns its rows per table (walks, questions, rejects) and stats."""
    t0 = time.perf_counter()
    composer = composer or make_composer(cfg, language=ctx.language)
    chains = build_chains(cfg, ctx, batch)
    plan_chains(cfg, ctx, chains)
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
        results, cols = check_question(cfg, ctx, chain, comp)
        veto: frozenset[str] = frozenset()
        for _ in range(MAX_REPLANS if isinstance(composer, TemplateComposer) else 0):
            if not {r.name for r in results if not r.passed} & {"giveaway", "one_shot"}:
                break
            veto = veto | blamed(chain, cols, results)
            old = (chain.plan, comp, results, cols)
            plan_chain(cfg, ctx, chain, veto)
            comp = composer.compose_one(chain)
            results, cols = check_question(cfg, ctx, chain, comp)
            if sum(not r.passed for r in results) > sum(not r.passed for r in old[2]):
                chain.plan, comp, results, cols = old  # the re-plan did worse: keep the first
                break
        passed = all(r.passed for r in results)
        question_rows.append({
            "question_id": qid, "walk_id": chain.walk_id, "question": comp.question, "answer": comp.answer,
            "answer_aliases": chain.aliases[-1], "answer_type": comp.answer_type, "path": chain.titles,
            "hops": chain.hops, "evidence": chain.evidence, "answer_facts": chain.answer_facts,
            "composer": comp.composer, "checks": [r.row() for r in results], "passed": passed, "seed": chain.seed,
            "language": comp.language,
            "relations": [{"hop": j + 1, "relation": f.phrase, "source": f.source,
                           "stated_on": ctx.view.titles[f.stated_on]} for j, f in enumerate(chain.facts)],
            **cols,
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
