"""The filter stage: every trajectory of one rollout run lands in ``kept`` or in ``rejects`` with the
step and a snake_case reason (datatrove's filters with an exclusion writer).

Funnel order: format, effort, degeneration, correctness (exact / F1 / optional LLM judge),
duplicate trajectories, and, when ``filters.min_solve_rate_tools > 0``, the with-tools half of
difficulty (questions the teacher never solves with tools). Question-level filters run earlier,
in the screen stage, so no rollout is paid for a question they drop. One batch: duplicate
trajectories are found across the whole run; the kept and rejected rows are committed together.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass, field
from typing import Any

from hopforge.config import Config
from hopforge.filters.correctness import AnswerFilter
from hopforge.filters.dedup import DuplicateTrajectoryFilter, QuestionVerdictFilter
from hopforge.filters.degeneration import DegenerationFilter
from hopforge.filters.difficulty import difficulty_verdicts, trajectory_outcomes
from hopforge.filters.effort import EffortFilter
from hopforge.filters.format import FormatFilter
from hopforge.filters.steps import Filter, FilterPipeline, reject_row
from hopforge.llm.client import TextClient, open_teacher
from hopforge.llm.service import release_teachers
from hopforge.stage import Batch, Stage, StageRun, StageStats, run_stage
from hopforge.storage.episodes import Episode, iter_episodes, load_questions

FILTERS = Batch("filters", 0)


@dataclass
class FilterStats(StageStats):
    trajectories: int = 0
    kept: int = 0
    rejected: int = 0
    answer_judge_requests: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list, metadata={"merge": "first"})


class FilterStage(Stage):
    name = "filters"
    upstream = ("rollouts",)
    reads = ("questions", "trajectories", "turns")
    writes = ("kept", "rejects")
    section = "filters"
    stats_type = FilterStats

    def __init__(self, judge: TextClient | None = None) -> None:
        self.judge = judge  # injected by tests; else the configured teacher when filters.llm_judge

    def talks_to_teacher(self, cfg: Config) -> bool:
        return cfg.filters.llm_judge

    def plan(self, run: StageRun) -> list[Batch]:
        return [FILTERS]

    def run_batch(self, run: StageRun, batch: Batch) -> FilterStats:
        t0 = time.process_time()
        kept, rejected, steps = asyncio.run(self._filter(run))
        infos = run.commit({"kept": kept, "rejects": rejected}, batch)
        funnel = FilterPipeline(steps).funnel()
        reasons: dict[str, int] = {}
        for r in rejected:
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        return FilterStats(trajectories=len(kept) + len(rejected), kept=len(kept), rejected=len(rejected),
                           rejects=reasons, steps=funnel, rows={i.table: i.rows for i in infos},
                           answer_judge_requests=next((s.judge_requests for s in steps
                                                       if isinstance(s, AnswerFilter)), 0),
                           cpu_seconds=time.process_time() - t0)

    async def _filter(self, run: StageRun) -> tuple[list[dict], list[dict], list[Filter]]:
        cfg, f = run.cfg, run.cfg.filters
        questions = load_questions(run.out, run.partition("questions"))
        async with contextlib.AsyncExitStack() as stack:
            judge = None
            if f.llm_judge:
                run.on_close("teacher", functools.partial(release_teachers, run.fingerprint))
                judge = await stack.enter_async_context(open_teacher(cfg, self.judge, "filters.llm_judge",
                                                                     scope=run.fingerprint))
            steps = build_steps(run, questions, judge)
            pipeline = FilterPipeline(steps)
            kept: list[dict[str, Any]] = []
            rejected: list[dict[str, Any]] = []

            def keep(ep: Episode) -> None:
                c = ep.notes["correctness"]
                kept.append({"trajectory_id": ep.trajectory_id, "question_id": ep.question_id,
                             "correct": c["correct"], "f1": c["f1"], "judge_verdict": c["judge_verdict"],
                             "judge_rationale": c["judge_rationale"], "action_hash": ep.notes["action_hash"]})

            def reject(ep: Episode, step: Filter, decision: Any) -> None:
                rejected.append(reject_row(ep, step, decision))

            await pipeline.run(iter_episodes(run.out, run=run.partition("rollouts"), questions=questions),
                               keep, reject)
        return kept, rejected, steps


def build_steps(run: StageRun, questions: dict[str, dict[str, Any]], judge: TextClient | None) -> list[Filter]:
    """The trajectory filters in funnel order: cheap structural checks first, answers, then duplicates."""
    f = run.cfg.filters
    steps: list[Filter] = [
        FormatFilter(f.max_masked_calls, f.max_masked_share),
        EffortFilter(f.min_tool_calls, f.max_tokens),
        DegenerationFilter(),
        AnswerFilter(f.f1_threshold, judge=judge),
        DuplicateTrajectoryFilter({}),
    ]
    if f.min_solve_rate_tools > 0:
        trajs = run.read("trajectories", columns=["trajectory_id", "question_id", "attempt", "status",
                                                  "final_answer"]).to_pylist()
        outcomes = trajectory_outcomes(trajs, questions, f.f1_threshold, run.cfg.rollout.attempts_per_question)
        rows = [{"question_id": q, "solve_rate_no_tools": None, "solve_rate_tools": sum(o) / len(o)}
                for q, o in outcomes.items() if o]
        steps.append(QuestionVerdictFilter("difficulty", difficulty_verdicts(rows, 1.0, f.min_solve_rate_tools)))
    return steps


def run_filters(cfg: Config, *, judge: TextClient | None = None, **kwargs: Any) -> FilterStats:
    """Run the filter stage for ``cfg`` with the local executor (what ``hopforge filter`` does)."""
    stats = run_stage("filters", cfg, stage=FilterStage(judge), **kwargs)
    assert isinstance(stats, FilterStats)
    return stats
