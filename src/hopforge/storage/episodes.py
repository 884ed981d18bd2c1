"""An episode: one trajectory row, its turns in order, and its question.

Filters and labels work on episodes, not on raw tables. :func:`iter_episodes`
streams them shard by shard: a first cheap pass reads only the ``trajectory_id``
column of ``turns`` to learn the last shard holding each trajectory, so an
episode is emitted as soon as all its turns have been seen and memory stays
bounded by the trajectories that straddle shards, not by the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from hopforge.errors import StorageError
from hopforge.storage import read_table, shard_paths
from hopforge.storage.schemas import schema_for

TOOLS = ("search", "visit", "answer")


@dataclass
class Call:
    """One tool call an assistant turn made, with the observation it got back."""

    turn_index: int
    tool_name: str | None
    args: dict[str, Any]
    parse_error: str | None
    observation: dict[str, Any] | None = None  # the tool turn answering this call

    @property
    def key(self) -> tuple[str, str]:
        """What the call asked for, normalised: two calls with one key fetch the same thing."""
        name = self.tool_name or ""
        if name == "search":
            return name, " ".join((self.args.get("query") or "").casefold().split())
        if name == "visit":
            return name, f"{(self.args.get('title') or '').casefold().strip()}#{self.args.get('page') or 0}"
        return name, " ".join(str(self.args.get("text") or "").casefold().split())

    @property
    def failed(self) -> bool:
        obs = self.observation
        return bool(self.parse_error) or (obs is not None and bool(obs.get("error")))


@dataclass
class Episode:
    trajectory: dict[str, Any]
    turns: list[dict[str, Any]]
    question: dict[str, Any] | None
    # Filled by steps for the kept row (correctness) or later steps (action hash).
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def trajectory_id(self) -> str:
        return self.trajectory["trajectory_id"]

    @property
    def question_id(self) -> str:
        return self.trajectory["question_id"]

    def calls(self) -> list[Call]:
        """Tool calls in order; each assistant turn with a tool name or a parse error is a call.

        The observation is the tool turn with the same ``tool_call_id``, or, when
        ids are absent, the next tool turn.
        """
        cached = self.notes.get("_calls")
        if cached is not None:
            return cached
        calls: list[Call] = []
        by_id: dict[str, Call] = {}
        pending: list[Call] = []
        for t in self.turns:
            role = t.get("role")
            if role == "assistant" and (t.get("tool_name") or t.get("parse_error")):
                c = Call(t["turn_index"], t.get("tool_name"), _args(t.get("tool_args")), t.get("parse_error"))
                calls.append(c)
                if t.get("tool_call_id"):
                    by_id[t["tool_call_id"]] = c
                pending.append(c)
            elif role == "tool":
                target = by_id.get(t.get("tool_call_id") or "")
                if target is None or target.observation is not None:
                    target = next((c for c in pending if c.observation is None), None)
                if target is not None:
                    target.observation = t
                    if target in pending:
                        pending.remove(target)
        self.notes["_calls"] = calls
        return calls


def _args(raw: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (raw or {}).items() if v is not None}


def load_questions(out: str | Path, run: str | None = None) -> dict[str, dict[str, Any]]:
    return {q["question_id"]: q for q in read_table(out, "questions", run=run).to_pylist()}


def iter_episodes(
    out: str | Path,
    *,
    skip: set[str] | frozenset[str] = frozenset(),
    only: set[str] | None = None,
    questions: dict[str, dict[str, Any]] | None = None,
    run: str | None = None,
    question_run: str | None = None,
    batch: str | None = None,
) -> Iterator[Episode]:
    """Episodes of every trajectory not in ``skip`` (and in ``only`` when given), in shard order.

    ``run`` is the partition of ``trajectories`` and ``turns`` to read (one rollout stage run;
    None: every partition), ``batch`` narrows it to the shards one batch committed, and
    ``question_run`` is the partition of ``questions`` when ``questions`` is not given.

    A trajectory without any turn row is still yielded (with ``turns == []``) at the
    end, so the format filter can reject it instead of it vanishing.
    """
    trajectories = {
        t["trajectory_id"]: t
        for t in read_table(out, "trajectories", run=run, batch=batch).to_pylist()
        if t["trajectory_id"] not in skip and (only is None or t["trajectory_id"] in only)
    }
    if questions is None:
        questions = load_questions(out, question_run)
    paths = shard_paths(out, "turns", run, batch=batch)
    last_shard: dict[str, int] = {}
    wanted_shards: set[int] = set()
    for i, p in enumerate(paths):
        try:
            ids = pq.read_table(p, columns=["trajectory_id"]).column("trajectory_id").to_pylist()
        except (OSError, ValueError) as e:
            raise StorageError(f"cannot read turns shard {p}: {e}") from None
        for tid in set(ids):
            if tid in trajectories:
                last_shard[tid] = i
                wanted_shards.add(i)
    finishing: dict[int, list[str]] = {}
    for tid, last in last_shard.items():
        finishing.setdefault(last, []).append(tid)
    schema = schema_for("turns")
    pending: dict[str, list[dict[str, Any]]] = {}
    for i, p in enumerate(paths):
        if i not in wanted_shards:
            continue  # no wanted trajectory has turns here (e.g. all already decided)
        rows = pq.read_table(p, schema=schema).to_pylist()
        for r in rows:
            if r["trajectory_id"] in trajectories:
                pending.setdefault(r["trajectory_id"], []).append(r)
        for tid in finishing.get(i, ()):
            turns = sorted(pending.pop(tid, []), key=lambda r: r["turn_index"])
            traj = trajectories.pop(tid)
            yield Episode(traj, turns, questions.get(traj["question_id"]))
    for tid, traj in trajectories.items():
        yield Episode(traj, [], questions.get(traj["question_id"]))
