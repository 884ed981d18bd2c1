"""The label stage: turn labels and loss weights (``turn_labels``) for the kept trajectories of one
filter run, with rule labels or, when ``labels.judge``, a teacher acting as judge.

Batches follow the rollout stage's batches: a label batch reads only the ``trajectories`` and
``turns`` shards that one rollout batch committed, so the work of each batch is proportional
to it, not to the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from hopforge.config import Config
from hopforge.labels.judge import TurnJudge
from hopforge.labels.rules import apply_rules_policy, rule_labels
from hopforge.llm.client import TextClient, open_teacher
from hopforge.llm.service import release_teachers
from hopforge.stage import Batch, Stage, StageRun, StageStats, run_stage
from hopforge.storage import read_manifest
from hopforge.storage.episodes import iter_episodes, load_questions

CHUNK = 64  # episodes per judge round


@dataclass
class LabelStats(StageStats):
    trajectories: int = 0
    turns: int = 0
    assistant_turns: int = 0
    assistant_weight_sum: float = 0.0
    judge_labels: dict[str, int] = field(default_factory=dict)
    assistant_turn_policies: dict[str, int] = field(default_factory=dict)
    judge_requests: int = 0
    judge_fallback_windows: int = 0

    @property
    def mean_assistant_loss_weight(self) -> float | None:
        return round(self.assistant_weight_sum / self.assistant_turns, 4) if self.assistant_turns else None

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "mean_assistant_loss_weight": self.mean_assistant_loss_weight}


class LabelStage(Stage):
    name = "labels"
    upstream = ("filters",)
    reads = ("questions", "trajectories", "turns", "kept")
    writes = ("turn_labels",)
    section = "labels"
    stats_type = LabelStats

    def __init__(self, judge: TextClient | None = None) -> None:
        self.judge = judge  # injected by tests; else the configured teacher when labels.judge

    def talks_to_teacher(self, cfg: Config) -> bool:
        return cfg.labels.judge

    def plan(self, run: StageRun) -> list[Batch]:
        """One batch per rollout batch that has kept trajectories."""
        rollouts = run.partition("rollouts")
        tags = sorted({e.batch or "" for e in read_manifest(run.out, "trajectories") if e.run == rollouts})
        return [Batch(f"labels-{tag or 'untagged'}", i, tag or None) for i, tag in enumerate(tags)]

    def run_batch(self, run: StageRun, batch: Batch) -> LabelStats:
        t0 = time.process_time()
        stats, rows = asyncio.run(self._label(run, batch.payload))
        infos = run.commit({"turn_labels": rows}, batch)
        stats.rows = {i.table: i.rows for i in infos}
        stats.cpu_seconds = time.process_time() - t0
        return stats

    async def _label(self, run: StageRun, rollout_batch: str | None) -> tuple[LabelStats, list[dict[str, Any]]]:
        cfg, lc = run.cfg, run.cfg.labels
        kept = set(run.read("kept", columns=["trajectory_id"]).column("trajectory_id").to_pylist())
        stats = LabelStats()
        out_rows: list[dict[str, Any]] = []
        judge_labels: Counter[str] = Counter()
        policies: Counter[str] = Counter()
        async with contextlib.AsyncExitStack() as stack:
            turn_judge = None
            if lc.judge:
                run.on_close("teacher", functools.partial(release_teachers, run.fingerprint))
                client = await stack.enter_async_context(open_teacher(cfg, self.judge, "labels.judge",
                                                                      scope=run.fingerprint))
                turn_judge = TurnJudge(client, window=lc.judge_window, not_necessary_weight=lc.not_necessary_weight)
            episodes = iter_episodes(run.out, only=kept, run=run.partition("rollouts"), batch=rollout_batch,
                                     questions=load_questions(run.out, run.partition("questions")))
            while chunk := list(islice(episodes, CHUNK)):
                if turn_judge is not None:
                    labelled = await turn_judge.label_many(chunk)
                else:
                    labelled = [apply_rules_policy(ep, rule_labels(ep)) for ep in chunk]
                for ep, rows in zip(chunk, labelled, strict=True):
                    roles = {t["turn_index"]: t.get("role") for t in ep.turns}
                    for r in rows:
                        if roles[r["turn_index"]] == "assistant":
                            stats.assistant_turns += 1
                            judge_labels[r["judge_label"] or "none"] += 1
                            policies[r["label_policy"]] += 1
                            stats.assistant_weight_sum += r["loss_weight"]
                    stats.trajectories += 1
                    stats.turns += len(rows)
                    out_rows.extend(rows)
            if turn_judge is not None:
                stats.judge_requests, stats.judge_fallback_windows = turn_judge.requests, turn_judge.fallback_windows
        stats.judge_labels, stats.assistant_turn_policies = dict(judge_labels), dict(policies)
        return stats, out_rows


def run_labels(cfg: Config, *, judge: TextClient | None = None, **kwargs: Any) -> LabelStats:
    """Run the label stage for ``cfg`` with the local executor (what ``hopforge label`` does)."""
    stats = run_stage("labels", cfg, stage=LabelStage(judge), **kwargs)
    assert isinstance(stats, LabelStats)
    return stats
