"""The label stage: turn labels and loss weights for kept trajectories (``turn_labels``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any

from hopforge.config import Config
from hopforge.labels.judge import TurnJudge
from hopforge.labels.rules import apply_rules_policy, rule_labels
from hopforge.llm.client import TextClient, open_teacher
from hopforge.storage import ShardWriter, existing_ids, read_table
from hopforge.storage.episodes import iter_episodes
from hopforge.storage.reports import save_report


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
            client = await stack.enter_async_context(open_teacher(cfg, judge, "filters.label_judge"))
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
    stats["report_path"] = str(save_report(out, "labels", cfg.run_id, stats))
    return stats


def run_labels(cfg: Config, *, judge: TextClient | None = None, chunk: int = 64) -> dict[str, Any]:
    """Write ``turn_labels`` (rule labels, judge labels when ``filters.label_judge``, loss weights) for kept trajectories."""
    return asyncio.run(_run_labels(cfg, judge, chunk))
