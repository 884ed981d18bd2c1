"""The screen stage: question-level filters that run before any rollout, so the teacher is never
paid for a question that would be dropped afterwards.

In funnel order: decontamination against a benchmark file (``benchmark_overlap``),
near-duplicate questions by MinHash LSH (``near_duplicate_question``), and, when
``screen.difficulty_k > 0``, the closed-book half of difficulty calibration: the teacher
answers each question ``k`` times without tools and a question it answers more often than
``screen.max_solve_rate_no_tools`` is dropped (``solvable_without_tools``; ASearcher /
DeepDive). Rejected questions get a ``rejects`` row (stage ``screen``); the rollout stage
rolls out the passed questions that have none. Closed-book rates land in ``difficulty``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from hopforge.config import Config
from hopforge.filters.decontaminate import contaminated_questions, load_benchmark
from hopforge.filters.dedup import near_duplicate_questions
from hopforge.filters.difficulty import Solver, calibrate, no_tool_solver
from hopforge.llm.client import TextClient, open_teacher
from hopforge.llm.service import release_teachers
from hopforge.stage import Batch, Stage, StageRun, StageStats

SCREEN = Batch("screen", 0)
QUESTION_COLUMNS = ["question_id", "question", "answer", "answer_aliases", "passed"]


@dataclass
class ScreenStats(StageStats):
    questions: int = 0  # passed their checks: the screen's input
    screened_in: int = 0  # go on to rollouts
    calibrated: int = 0  # closed-book calibration done for this many


class ScreenStage(Stage):
    name = "screen"
    upstream = ("questions",)
    reads = ("questions",)
    writes = ("difficulty", "rejects")
    section = "screen"
    stats_type = ScreenStats

    def __init__(self, client: TextClient | None = None, solver: Solver | None = None) -> None:
        self.client, self.solver = client, solver  # injected by tests; else the configured teacher

    def settings(self, cfg: Config) -> dict[str, Any]:
        s = {**super().settings(cfg), "seed": cfg.run.seed}
        if cfg.screen.decontaminate is not None:
            p = Path(cfg.screen.decontaminate)
            s["decontaminate"] = {"name": p.name, "size": p.stat().st_size if p.exists() else None}
        return s

    def talks_to_teacher(self, cfg: Config) -> bool:
        return cfg.screen.difficulty_k > 0

    def plan(self, run: StageRun) -> list[Batch]:
        return [SCREEN]

    def run_batch(self, run: StageRun, batch: Batch) -> ScreenStats:
        t0 = time.process_time()
        cfg, sc = run.cfg, run.cfg.screen
        q = run.read("questions", columns=QUESTION_COLUMNS)
        questions = {r["question_id"]: r for r in q.filter(pc.field("passed")).to_pylist()}
        verdicts: dict[str, tuple[str, str, str]] = {}  # question id -> (step, reason, detail)
        if sc.decontaminate is not None:
            bench = load_benchmark(Path(sc.decontaminate), sc.decontam_ngram)
            for qid, (reason, detail) in contaminated_questions(questions.values(), bench, sc.decontam_ngram,
                                                                source=Path(sc.decontaminate).name).items():
                verdicts[qid] = ("decontaminate", reason, detail)
        alive = [questions[k] for k in sorted(questions) if k not in verdicts]
        for qid, (reason, detail) in near_duplicate_questions(alive, threshold=sc.minhash_threshold,
                                                              num_perm=sc.minhash_num_perm,
                                                              seed=cfg.run.seed + 1).items():
            verdicts[qid] = ("near_duplicate_question", reason, detail)
        difficulty: list[dict[str, Any]] = []
        if sc.difficulty_k > 0:
            todo = [questions[k] for k in sorted(questions) if k not in verdicts]
            difficulty = asyncio.run(self._calibrate(run, todo))
            for r in difficulty:
                if r["solve_rate_no_tools"] > sc.max_solve_rate_no_tools:
                    verdicts[r["question_id"]] = ("difficulty", "solvable_without_tools",
                                                  f"closed-book solve rate {r['solve_rate_no_tools']:.2f} > "
                                                  f"{sc.max_solve_rate_no_tools}")
        rejects = [{"stage": "screen", "step": step, "reason": reason, "row_table": "questions", "row_id": qid,
                    "detail": detail} for qid, (step, reason, detail) in sorted(verdicts.items())]
        infos = run.commit({"difficulty": difficulty, "rejects": rejects}, batch)
        return ScreenStats(questions=len(questions), screened_in=len(questions) - len(verdicts),
                           calibrated=len(difficulty), rejects=dict(Counter(v[1] for v in verdicts.values())),
                           rows={i.table: i.rows for i in infos}, cpu_seconds=time.process_time() - t0)

    async def _calibrate(self, run: StageRun, todo: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not todo:
            return []
        cfg = run.cfg
        sc = cfg.screen
        solver = self.solver
        run.on_close("teacher", functools.partial(release_teachers, run.fingerprint))
        async with open_teacher(cfg, self.client, "screen.difficulty_k", scope=run.fingerprint) as client:
            solver = solver or no_tool_solver(client)
            return await calibrate(todo, k=sc.difficulty_k, solve_no_tools=solver, f1_threshold=sc.f1_threshold,
                                   teacher_model=cfg.teacher.model)

    def finish(self, run: StageRun, stats: StageStats) -> StageStats:
        n = run.read("questions", columns=["passed"]).filter(pc.field("passed")).num_rows
        dropped = run.read("rejects", stage="screen", columns=[]).num_rows
        if n - dropped <= 0:
            stats.empty = (f"0 of {n} questions passed the screen ({dropped} near-duplicate, contaminated or "
                           "solvable closed-book; see rejects where stage = 'screen')")
        return stats


