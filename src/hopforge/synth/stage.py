"""The question stage: seeded random walks over one graph run -> multi-hop questions with checks.

Writes ``walks``, ``questions`` (every composed question, ``passed`` says whether it
passed its checks) and ``rejects`` (one row per failed check), one group per batch.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow.compute as pc

from hopforge.config import Config
from hopforge.stage import Batch, Empty, Stage, StageRun, StageStats, run_stage
from hopforge.storage import content_id
from hopforge.synth.questions import (
    check_language,
    compose_batch,
    context,
    make_composer,
    plan_questions,
)


@dataclass
class QuestionStats(StageStats):
    walks: int = 0
    questions: int = 0
    passed: int = 0
    hops: dict[str, int] = field(default_factory=dict)
    planned: int = field(default=0, metadata={"merge": "max"})


class QuestionStage(Stage):
    name = "questions"
    upstream = ("graph",)
    reads = ("nodes", "links", "pages", "redirects")
    writes = ("walks", "questions", "rejects")
    section = "synth"
    extra_sections = ("search",)  # the index its searches rank with
    execution_keys: ClassVar[frozenset[str]] = frozenset({"workers", "llm_concurrency"})
    # 3: walks over facts, clue plans with certificates, retrieval gates, leak forms, offline replay.
    version = "3"
    stats_type = QuestionStats

    def settings(self, cfg: Config) -> dict[str, Any]:
        return {**super().settings(cfg), "seed": cfg.run.seed}

    def talks_to_teacher(self, cfg: Config) -> bool:
        return cfg.synth.composer == "llm"

    def workers(self, cfg: Config) -> int:
        return 1 if self.talks_to_teacher(cfg) else cfg.synth.workers

    def plan(self, run: StageRun) -> list[Batch]:
        cfg = run.cfg
        check_language(cfg)
        batches = plan_questions(cfg, context(cfg, run.partition("graph")))
        if not batches:
            raise Empty(f"the graph yields 0 distinct walks of {cfg.synth.hops_min}..{cfg.synth.hops_max} hops "
                        "over facts (links whose evidence states a relation, between pages with a clue that fits "
                        f">= {cfg.synth.min_clue_pages} pages; excluded page kinds and max_in_degree apply)")
        planned = sum(b.size for b in batches)
        return [Batch(content_id("question-batch", b.seed, b.picks), b.index, (b, planned)) for b in batches]

    def run_batch(self, run: StageRun, batch: Batch) -> QuestionStats:
        t0 = time.process_time()
        qb, planned = batch.payload
        composer = None
        if self.talks_to_teacher(run.cfg):  # the LLM composer: one teacher for the whole run
            from hopforge.llm.service import release_teachers

            run.on_close("teacher", functools.partial(release_teachers, run.fingerprint))
            composer = make_composer(run.cfg, scope=run.fingerprint)
        rows, st = compose_batch(run.cfg, context(run.cfg, run.partition("graph")), qb, composer)
        infos = run.commit(rows, batch)
        return QuestionStats(walks=st["walks"], questions=st["questions"], passed=st["passed"], hops=st["hops"],
                             rejects=st["rejects"], planned=planned,
                             rows=dict(Counter({i.table: i.rows for i in infos})),
                             cpu_seconds=time.process_time() - t0)

    def finish(self, run: StageRun, stats: StageStats) -> StageStats:
        # Counted from the table, not from the batches' stats: a resumed run skips finished batches.
        passed = run.read("questions", columns=["passed"]).column("passed")
        n_passed = int(pc.sum(passed.cast("int64")).as_py() or 0)
        if n_passed == 0:
            stats.empty = f"0 of {len(passed)} questions passed their checks (see rejects where stage = 'questions')"
        return stats


def run_questions(cfg: Config, **kwargs: Any) -> QuestionStats:
    """Run the question stage for ``cfg`` with the local executor (what ``hopforge questions`` does)."""
    stats = run_stage("questions", cfg, **kwargs)
    assert isinstance(stats, QuestionStats)
    return stats
