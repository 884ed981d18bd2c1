"""Stage entry point: ``run_filters(cfg)`` (kept / rejects / difficulty + funnel).

Both are idempotent: a trajectory already decided (in ``kept`` or in ``rejects``
with stage "filter", any run) is not filtered again, and a kept trajectory already
labelled by this run is not labelled again. Each invocation saves its report as JSON
under ``OUT/reports/`` and returns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pyarrow.compute as pc

from hopforge.config import Config
from hopforge.errors import ConfigError
from hopforge.filters.correctness import AnswerFilter, TextClient
from hopforge.filters.decontaminate import contaminated_questions, load_benchmark
from hopforge.filters.dedup import DuplicateTrajectoryFilter, QuestionVerdictFilter, near_duplicate_questions
from hopforge.filters.degeneration import DegenerationFilter
from hopforge.filters.difficulty import (
    Solver,
    calibrate,
    difficulty_verdicts,
    no_tool_solver,
    trajectory_outcomes,
)
from hopforge.filters.effort import EffortFilter
from hopforge.storage.episodes import Episode, iter_episodes, load_questions
from hopforge.filters.format import FormatFilter
from hopforge.filters.steps import Filter, FilterPipeline, reject_row
from hopforge.llm.client import open_teacher
from hopforge.storage import ShardWriter, existing_ids, read_table
from hopforge.storage.reports import save_report


def decided_trajectories(out: Path) -> set[str]:
    rejects = read_table(out, "rejects", columns=["stage", "row_id"])
    filtered = rejects.filter(pc.equal(rejects.column("stage"), "filter"))
    return existing_ids(out, "kept", "trajectory_id") | set(filtered.column("row_id").to_pylist())


def build_steps(cfg: Config, questions: dict[str, dict[str, Any]], *, kept_questions: set[str],
                seen_hashes: dict[str, str], difficulty: dict[str, tuple[str, str]] | None,
                answer_judge: TextClient | None) -> list[Filter]:
    """The filter chain in funnel order: question-level steps, cheap trajectory checks, then answers."""
    f = cfg.filters
    steps: list[Filter] = []
    if f.decontaminate is not None:
        bench = load_benchmark(Path(f.decontaminate), f.decontam_ngram)
        steps.append(QuestionVerdictFilter("decontaminate", contaminated_questions(
            questions.values(), bench, f.decontam_ngram, source=Path(f.decontaminate).name)))
    steps.append(QuestionVerdictFilter("near_duplicate_question", near_duplicate_questions(
        questions.values(), threshold=f.minhash_threshold, num_perm=f.minhash_num_perm, seed=cfg.run.seed + 1,
        priority=kept_questions)))
    if difficulty is not None:
        steps.append(QuestionVerdictFilter("difficulty", difficulty))
    steps += [
        FormatFilter(),
        EffortFilter(f.min_tool_calls, f.max_tokens),
        DegenerationFilter(),
        AnswerFilter(f.f1_threshold, judge=answer_judge),
        DuplicateTrajectoryFilter(seen_hashes),
    ]
    return steps


async def _calibrate(cfg: Config, questions: dict[str, dict[str, Any]], client: TextClient | None,
                     solver: Solver | None) -> dict[str, Any]:
    out, f = cfg.run.out, cfg.filters
    done = existing_ids(out, "difficulty", "question_id")
    todo = [q for qid, q in sorted(questions.items()) if qid not in done]
    if todo:
        if solver is None:
            assert client is not None, "the caller starts the teacher when no solver is injected"
            solver = no_tool_solver(client)
        outcomes = trajectory_outcomes(read_table(out, "trajectories").to_pylist(), questions, f.f1_threshold,
                                       f.difficulty_k)
        rows = await calibrate(todo, k=f.difficulty_k, solve_no_tools=solver, tool_outcomes=outcomes,
                               f1_threshold=f.f1_threshold, teacher_model=cfg.teacher.model)
        with ShardWriter(out, "difficulty", run_id=cfg.run_id, config_hash=cfg.config_hash()) as w:
            w.write_many(rows)
    return {"calibrated": len(todo), "already_calibrated": len(done)}


async def _run_filters(cfg: Config, judge: TextClient | None, solver: Solver | None) -> dict[str, Any]:
    started = time.monotonic()
    out, f = Path(cfg.run.out), cfg.filters
    # Only questions that have trajectories matter: a question without any (e.g. one that failed the
    # synth checks) must neither shadow a near-duplicate that has data nor cost calibration requests.
    rolled_out = set(read_table(out, "trajectories", columns=["question_id"]).column("question_id").to_pylist())
    questions = {qid: q for qid, q in load_questions(out).items() if qid in rolled_out}
    decided = decided_trajectories(out)
    kept_table = read_table(out, "kept", columns=["question_id", "action_hash", "trajectory_id"]).to_pylist()
    seen = {r["action_hash"]: r["trajectory_id"] for r in kept_table if r["action_hash"]}
    report: dict[str, Any] = {"stage": "filter", "run_id": cfg.run_id, "skipped_already_decided": len(decided)}
    async with contextlib.AsyncExitStack() as stack:
        # One teacher for both uses, started only when needed (a local server takes a while to boot).
        client = None
        if f.llm_judge or (f.difficulty_k > 0 and solver is None):
            why = "filters.llm_judge" if f.llm_judge else "filters.difficulty_k > 0"
            client = await stack.enter_async_context(open_teacher(cfg, judge, why))
        difficulty = None
        if f.difficulty_k > 0:
            report["difficulty"] = await _calibrate(cfg, questions, client, solver)
            difficulty = difficulty_verdicts(read_table(out, "difficulty").to_pylist(), f.max_solve_rate_no_tools,
                                             f.min_solve_rate_tools)
        answer_judge = client if f.llm_judge else None
        steps = build_steps(cfg, questions, kept_questions={r["question_id"] for r in kept_table},
                            seen_hashes=seen, difficulty=difficulty, answer_judge=answer_judge)
        pipeline = FilterPipeline(steps)
        meta = {"run_id": cfg.run_id, "config_hash": cfg.config_hash(), "rows_per_shard": 50_000}
        with ShardWriter(out, "kept", **meta) as kept_w, ShardWriter(out, "rejects", **meta) as rej_w:

            def keep(ep: Episode) -> None:
                c = ep.notes["correctness"]
                kept_w.write({"trajectory_id": ep.trajectory_id, "question_id": ep.question_id,
                              "correct": c["correct"], "f1": c["f1"], "judge_verdict": c["judge_verdict"],
                              "judge_rationale": c["judge_rationale"], "action_hash": ep.notes["action_hash"]})

            def reject(ep: Episode, step: Filter, decision: Any) -> None:
                rej_w.write(reject_row(ep, step, decision))

            await pipeline.run(iter_episodes(out, skip=decided, questions=questions), keep, reject)
    funnel = pipeline.funnel()
    report.update({
        "in": funnel[0]["in"] if funnel else 0,
        "kept": funnel[-1]["kept"] if funnel else 0,
        "rejected": sum(s["rejected"] for s in funnel),
        "steps": funnel,
        "answer_judge_requests": next((s.judge_requests for s in steps if isinstance(s, AnswerFilter)), 0),
        "seconds": round(time.monotonic() - started, 3),
    })
    report["report_path"] = str(save_report(out, "filter", cfg.run_id, report))
    return report


def run_filters(cfg: Config, *, judge: TextClient | None = None, solver: Solver | None = None) -> dict[str, Any]:
    """Filter every undecided trajectory into ``kept`` or ``rejects``; returns the funnel report.

    ``judge`` (a ``complete_text`` client) and ``solver`` (the closed-book solver for
    difficulty calibration) default to the configured teacher when the config asks for them.
    """
    return asyncio.run(_run_filters(cfg, judge, solver))
