"""The rollout stage: the teacher plays the search agent over the questions that passed their
checks and the screen; writes ``trajectories`` and ``turns``.

A batch is ``rollout.batch_questions`` (question, attempt) pairs. It may commit several
times (one group per flush); a re-run of a batch reads only the trajectory ids its own
earlier flushes committed (shards tagged with the batch id), so resuming costs in
proportion to the batch, not to the table.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from hopforge.config import Config
from hopforge.llm.service import SharedTeacher, release_teachers, shared_teacher
from hopforge.rollouts.engine import (
    LiveStats,
    TrajectorySink,
    run_engine,
    trajectory_id,
)
from hopforge.rollouts.environment import Environment
from hopforge.stage import Batch, Empty, Stage, StageRun, StageStats, run_stage
from hopforge.storage import content_id


@dataclass
class RolloutStats(StageStats):
    trajectories: int = 0
    turns: int = 0
    tokens: int = 0
    errors: int = 0
    retries: int = 0
    context_events: int = 0
    resumed: int = 0  # trajectories of a batch already committed by an earlier, interrupted run
    status: dict[str, int] = field(default_factory=dict)


class RolloutStage(Stage):
    name = "rollouts"
    upstream = ("graph", "screen")
    reads = ("questions", "pages", "redirects", "rejects")
    writes = ("trajectories", "turns")
    section = "rollout"
    extra_sections = ("search",)  # the index its searches rank with
    # How fast and how robustly requests go out; what a trajectory contains does not depend on them.
    execution_keys: ClassVar[frozenset[str]] = frozenset(
        {"max_in_flight", "flush_every", "flush_seconds", "request_timeout_s", "retries", "retry_base_s",
         "retry_max_s"})
    # 3: folds in one large step keeping a cached head (rollout.context_fold_to); trajectories.endpoint.
    version = "3"
    stats_type = RolloutStats
    partial_batches = True

    def __init__(self, *, policy: Any = None, progress: Callable[[LiveStats], None] | None = None) -> None:
        self.policy = policy  # scripted backend: a policy object instead of teacher.scripted_policy (tests)
        self.progress = progress  # live counters of the batch in progress (hopforge generate)

    def settings(self, cfg: Config) -> dict[str, Any]:
        return {**super().settings(cfg), "seed": cfg.run.seed}

    def talks_to_teacher(self, cfg: Config) -> bool:
        return True

    def plan(self, run: StageRun) -> list[Batch]:
        cfg = run.cfg
        q = run.read("questions", columns=["question_id", "passed"])
        dropped = set(run.read("rejects", stage="screen", columns=["row_id"]).column("row_id").to_pylist())
        items: list[tuple[str, int]] = []
        seen: set[str] = set()
        for qid, passed in zip(q.column("question_id").to_pylist(), q.column("passed").to_pylist(), strict=True):
            if not passed or qid in dropped or qid in seen:
                continue
            seen.add(qid)
            items.extend((qid, a) for a in range(cfg.rollout.attempts_per_question))
        if not items:
            raise Empty(f"0 of {q.num_rows} questions passed their checks and the screen: nothing to roll out")
        n = cfg.rollout.batch_questions
        return [Batch(content_id("rollout-batch", items[i:i + n]), i // n, tuple(items[i:i + n]))
                for i in range(0, len(items), n)]

    def run_batch(self, run: StageRun, batch: Batch) -> RolloutStats:
        t0 = time.process_time()
        cfg = run.cfg
        done = set(run.read("trajectories", columns=["trajectory_id"], batch=batch.id)
                   .column("trajectory_id").to_pylist())
        todo = [(qid, a) for qid, a in batch.payload
                if trajectory_id(qid, a, cfg.teacher.model, cfg.run.seed, run.fingerprint) not in done]
        stats = RolloutStats(resumed=len(done))
        if todo:
            q = run.read("questions", columns=["question_id", "question"])
            wanted = pa.array(sorted({qid for qid, _ in todo}), pa.string())
            q = q.filter(pc.is_in(q.column("question_id"), value_set=wanted))
            text = dict(zip(q.column("question_id").to_pylist(), q.column("question").to_pylist(), strict=True))
            # One teacher for the whole stage run (every batch, every thread): started by the first
            # batch that gets here, stopped by close_run after the last one. The batch runs on the
            # teacher's own event loop, so its requests need no hop between threads.
            run.on_close("teacher", functools.partial(release_teachers, run.fingerprint))
            teacher = shared_teacher(cfg, scope=run.fingerprint, policy=self.policy)
            live = teacher.run(self._roll_out(run, batch, teacher, [(qid, text[qid], a) for qid, a in todo]))
            stats.trajectories, stats.turns, stats.tokens = live.trajectories, live.turns, live.tokens
            stats.errors, stats.retries, stats.context_events = live.errors, live.retries, live.context_events
            stats.status = dict(live.status)
        written = run.read("trajectories", columns=[], batch=batch.id).num_rows
        stats.rows = {"trajectories": written - len(done)}
        stats.cpu_seconds = time.process_time() - t0
        return stats

    async def _roll_out(self, run: StageRun, batch: Batch, teacher: SharedTeacher,
                        items: list[tuple[str, str, int]]) -> LiveStats:
        cfg = run.cfg
        env = await asyncio.to_thread(Environment.from_tables, run.out, run.partition("graph"),
                                      page_chars=cfg.rollout.page_chars, search=cfg.search)
        sink = TrajectorySink(lambda tables: run.commit(tables, batch), flush_every=cfg.rollout.flush_every,
                              flush_seconds=cfg.rollout.flush_seconds)
        return await run_engine(cfg, teacher, env, sink, items, progress=self.progress, id_run=run.fingerprint)

    def finish(self, run: StageRun, stats: StageStats) -> StageStats:
        n = run.read("trajectories", columns=[]).num_rows
        if n == 0:
            stats.empty = "0 trajectories were written"
        return stats


def run_rollouts(cfg: Config, *, policy: Any = None, progress: Callable[[LiveStats], None] | None = None,
                 **kwargs: Any) -> RolloutStats:
    """Run the rollout stage for ``cfg`` with the local executor (what ``hopforge generate`` does)."""
    stats = run_stage("rollouts", cfg, stage=RolloutStage(policy=policy, progress=progress), **kwargs)
    assert isinstance(stats, RolloutStats)
    return stats
