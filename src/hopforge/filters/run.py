"""Stage entry points: ``run_filters(cfg)`` (kept / rejects / difficulty + funnel) and ``run_labels(cfg)``.

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
from hopforge.filters.episode import Episode, iter_episodes, load_questions
from hopforge.filters.format import FormatFilter
from hopforge.filters.judge import TurnJudge
from hopforge.filters.labels import apply_rules_policy, rule_labels
from hopforge.filters.steps import Filter, FilterPipeline, reject_row
from hopforge.storage import ShardWriter, existing_ids, read_table


@contextlib.asynccontextmanager
async def _teacher(cfg: Config, given: TextClient | None, why: str) -> AsyncIterator[TextClient]:
    """The injected client, or the configured teacher (``hopforge.synth.teacher.make_teacher``)."""
    if given is not None:
        yield given
        return
    try:
        from hopforge.synth.teacher import make_teacher  # the rollout stage's client contract
    except ImportError as e:
        raise ConfigError(f"{why} needs the teacher client hopforge.synth.teacher.make_teacher, "
                          f"which is not installed in this build ({e})") from None
    async with make_teacher(cfg) as client:
        yield client


def decided_trajectories(out: Path) -> set[str]:
    rejects = read_table(out, "rejects", columns=["stage", "row_id"])
    filtered = rejects.filter(pc.equal(rejects.column("stage"), "filter"))
    return existing_ids(out, "kept", "trajectory_id") | set(filtered.column("row_id").to_pylist())


def _save_report(out: Path, kind: str, run_id: str, report: dict[str, Any]) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = out / "reports" / f"{kind}-{run_id}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return path


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
            client = await stack.enter_async_context(_teacher(cfg, judge, why))
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
    report["report_path"] = str(_save_report(out, "filter", cfg.run_id, report))
    return report


def run_filters(cfg: Config, *, judge: TextClient | None = None, solver: Solver | None = None) -> dict[str, Any]:
    """Filter every undecided trajectory into ``kept`` or ``rejects``; returns the funnel report.

    ``judge`` (a ``complete_text`` client) and ``solver`` (the closed-book solver for
    difficulty calibration) default to the configured teacher when the config asks for them.
    """
    return asyncio.run(_run_filters(cfg, judge, solver))


async def _run_labels(cfg: Config, judge: TextClient | None, chunk: int) -> dict[str, Any]:
    started = time.monotonic()
    out, f = Path(cfg.run.out), cfg.filters
    # Scoped to this run: the catalog's `turns` view reads only the latest labelling run, so a run
    # with another config (another run id, e.g. judge on) must label every kept trajectory itself.
    labelled = set(read_table(out, "turn_labels", run=cfg.run_id, columns=["trajectory_id"])
                   .column("trajectory_id").to_pylist())
    todo = existing_ids(out, "kept", "trajectory_id") - labelled
    stats: dict[str, Any] = {"stage": "label", "run_id": cfg.run_id, "skipped_already_labelled": len(labelled),
                             "trajectories": 0, "turns": 0, "assistant_turns": 0}
    judge_labels: Counter[str] = Counter()
    policies: Counter[str] = Counter()
    weight_sum = 0.0
    async with contextlib.AsyncExitStack() as stack:
        turn_judge = None
        if f.label_judge:
            client = await stack.enter_async_context(_teacher(cfg, judge, "filters.label_judge"))
            turn_judge = TurnJudge(client, window=f.judge_window, not_necessary_weight=f.not_necessary_weight)
        with ShardWriter(out, "turn_labels", run_id=cfg.run_id, config_hash=cfg.config_hash(),
                         rows_per_shard=200_000) as w:
            episodes = iter_episodes(out, only=todo)
            while batch := list(islice(episodes, chunk)):
                if turn_judge is not None:
                    labelled_rows = await turn_judge.label_many(batch)
                else:
                    labelled_rows = [apply_rules_policy(ep, rule_labels(ep)) for ep in batch]
                for ep, rows in zip(batch, labelled_rows, strict=True):
                    roles = {t["turn_index"]: t.get("role") for t in ep.turns}
                    for r in rows:
                        if roles[r["turn_index"]] == "assistant":
                            stats["assistant_turns"] += 1
                            judge_labels[r["judge_label"] or "none"] += 1
                            policies[r["label_policy"]] += 1
                            weight_sum += r["loss_weight"]
                    stats["trajectories"] += 1
                    stats["turns"] += len(rows)
                    w.write_many(rows)
    stats.update({
        "judge_labels": dict(judge_labels),
        "assistant_turn_policies": dict(policies),
        "mean_assistant_loss_weight": round(weight_sum / stats["assistant_turns"], 4) if stats["assistant_turns"]
        else None,
        "judge_requests": turn_judge.requests if turn_judge else 0,
        "judge_fallback_windows": turn_judge.fallback_windows if turn_judge else 0,
        "seconds": round(time.monotonic() - started, 3),
    })
    stats["report_path"] = str(_save_report(out, "labels", cfg.run_id, stats))
    return stats


def run_labels(cfg: Config, *, judge: TextClient | None = None, chunk: int = 64) -> dict[str, Any]:
    """Write ``turn_labels`` (rule labels, judge labels when ``filters.label_judge``, loss weights) for kept trajectories."""
    return asyncio.run(_run_labels(cfg, judge, chunk))
