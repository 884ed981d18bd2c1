"""The long-horizon rollout engine: questions in, ``trajectories`` + ``turns`` out.

One coroutine per trajectory; the :class:`~hopforge.llm.client.Teacher`
bounds requests in flight globally (``rollout.max_in_flight``) and retries
transient failures. Each trajectory ends when the model answers, or at the turn
limit, the token budget, or an unrecoverable teacher error, and is then written
(turn rows first, then its trajectory row) in shards flushed every
``rollout.flush_every`` trajectories or ``rollout.flush_seconds``. A re-run skips
trajectory ids already in ``trajectories``, so a kill -9 loses only the
trajectories in flight (and rows buffered since the last flush).

Token budget: the sum of completion tokens plus estimated observation tokens,
i.e. the new content a trajectory adds (prompt tokens re-counted every turn would
make the budget quadratic in the horizon).

Context: the prompt size is estimated from the last request's prompt tokens per
byte; past ``rollout.context_fold_at`` x ``teacher.context_tokens`` (minus room
for the reply) the oldest observations (all but the last two) are replaced by
one-line stubs (``context_action = "truncated"``); if that is not enough, the
oldest half of the turns is dropped and replaced by a summary of what they saw
(``"summarized"``). Both are rare rewrites; normal turns only append.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Callable

import pyarrow as pa

from hopforge.config import Config
from hopforge.errors import StorageError, TeacherError
from hopforge.storage import content_id, existing_ids, read_table, schema_for, write_shard
from hopforge.rollouts.environment import Environment
from hopforge.rollouts.protocol import ChatProtocol, ModelTurn, TextProtocol, make_protocol
from hopforge.llm.client import Teacher, make_teacher

log = logging.getLogger(__name__)

OBS_CHARS_PER_TOKEN = 4.0  # observation token estimate when the server reports none


@dataclass(frozen=True)
class RolloutBatch:
    """Picklable work unit: (question_id, attempt) pairs not yet rolled out."""

    index: int
    items: tuple[tuple[str, int], ...]


@dataclass
class RolloutStats:
    trajectories: int = 0
    turns: int = 0
    tokens: int = 0
    errors: int = 0  # parse errors + tool errors + failed trajectories
    retries: int = 0
    skipped: int = 0
    context_events: int = 0
    status: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    in_flight: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(time.monotonic() - self.started, 3)
        d.pop("started")
        return d


def trajectory_id(question_id: str, attempt: int, model: str, seed: int) -> str:
    return content_id(question_id, attempt, model, seed)


def _questions(cfg: Config) -> pa.Table:
    q = read_table(cfg.run.out, "questions", columns=["question_id", "question", "answer", "path", "passed"])
    if q.num_rows == 0:
        raise StorageError(f"no questions under {cfg.run.out / 'questions'}: run `hopforge questions` first")
    return q


def plan_rollouts(cfg: Config) -> list[RolloutBatch]:
    """Batches of (question_id, attempt) whose trajectory id is not written yet."""
    q = _questions(cfg)
    done = existing_ids(cfg.run.out, "trajectories", "trajectory_id")
    items: list[tuple[str, int]] = []
    seen: set[str] = set()
    for qid, passed in zip(q.column("question_id").to_pylist(), q.column("passed").to_pylist(), strict=True):
        if passed is False or qid in seen:
            continue
        seen.add(qid)
        for attempt in range(cfg.rollout.attempts_per_question):
            if trajectory_id(qid, attempt, cfg.teacher.model, cfg.run.seed) not in done:
                items.append((qid, attempt))
    n = cfg.rollout.batch_questions
    return [RolloutBatch(i // n, tuple(items[i:i + n])) for i in range(0, len(items), n)]


class TrajectorySink:
    """Buffers finished trajectories and writes turns, then trajectories, as shards.

    The Parquet encode + fsync runs in a worker thread so the event loop keeps
    serving the other trajectories while a shard is written.
    """

    def __init__(self, cfg: Config) -> None:
        self.out = cfg.run.out
        self.run_id = cfg.run_id
        self.config_hash = cfg.config_hash()
        self.flush_every = cfg.rollout.flush_every
        self.flush_seconds = cfg.rollout.flush_seconds
        self._turns: list[dict[str, Any]] = []
        self._trajs: list[dict[str, Any]] = []
        self._last = time.monotonic()
        self._lock = asyncio.Lock()
        self.written = 0

    async def add(self, traj: dict[str, Any], turns: list[dict[str, Any]]) -> None:
        self._turns.extend(turns)
        self._trajs.append(traj)
        if len(self._trajs) >= self.flush_every or time.monotonic() - self._last >= self.flush_seconds:
            await self.flush()

    async def flush(self) -> None:
        self._last = time.monotonic()
        if not self._trajs:
            return
        turns, trajs = self._turns, self._trajs
        self._turns, self._trajs = [], []
        async with self._lock:
            await asyncio.to_thread(self._write, turns, trajs)
        self.written += len(trajs)

    def _write(self, turns: list[dict[str, Any]], trajs: list[dict[str, Any]]) -> None:
        # Turns first: a crash between the two leaves turns without a trajectory row, which the
        # next run closes as interrupted (close_orphans) instead of writing the turns twice.
        if turns:
            write_shard(self.out, "turns", pa.Table.from_pylist(turns, schema=schema_for("turns")),
                        run_id=self.run_id, config_hash=self.config_hash)
        write_shard(self.out, "trajectories", pa.Table.from_pylist(trajs, schema=schema_for("trajectories")),
                    run_id=self.run_id, config_hash=self.config_hash)


class RolloutEngine:
    """Runs trajectories against one teacher and one environment."""

    def __init__(self, cfg: Config, teacher: Teacher, env: Environment, sink: TrajectorySink | None,
                 stats: RolloutStats | None = None, protocol: ChatProtocol | TextProtocol | None = None) -> None:
        self.cfg = cfg
        self.teacher = teacher
        self.env = env
        self.sink = sink
        self.stats = stats or RolloutStats()
        t = cfg.teacher
        self.protocol: ChatProtocol | TextProtocol = protocol or make_protocol(
            teacher.kind, teacher.model, max_tokens=t.max_tokens, temperature=t.temperature,
            max_k=cfg.rollout.search_k * 2)
        r = cfg.rollout
        self.max_turns = r.max_turns
        self.token_budget = r.token_budget
        self.search_k = r.search_k
        reply_room = cfg.teacher.max_tokens
        self.fold_at_tokens = max(256, r.context_fold_at * cfg.teacher.context_tokens - reply_room)
        self.hard_limit_tokens = cfg.teacher.context_tokens - reply_room

    def observe(self, turn: ModelTurn) -> tuple[str, bool]:
        """The observation for a parsed turn, and whether it is an error observation."""
        if turn.action is None:
            return f"Error: {turn.parse_error}. Call exactly one tool: search, visit or answer.", True
        a = turn.action
        if a.name == "search":
            obs = self.env.render_search(a.args["query"], a.args.get("k") or self.search_k)
        else:
            obs = self.env.render_visit(a.args["title"], a.args.get("page") or 0)
        if turn.extra_calls:
            obs += f"\n\n(Note: {turn.extra_calls} extra tool call(s) ignored: one action per turn.)"
        return obs, False

    async def roll_out(self, question_id: str, question: str, attempt: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        cfg = self.cfg
        tid = trajectory_id(question_id, attempt, self.teacher.model, cfg.run.seed)
        proto = self.protocol
        conv, opening = proto.start(question)
        rows: list[dict[str, Any]] = [
            {"trajectory_id": tid, "question_id": question_id, "turn_index": i, "role": role, "content": text,
             "context_action": "none"} for i, (role, text) in enumerate(opening)]
        started = datetime.now(UTC)
        t_start = time.monotonic()
        status, final_answer, error = "turn_limit", None, None
        tokens_in = tokens_out = budget_used = retries = errors = context_events = tool_calls = 0
        tokens_per_byte = 1 / OBS_CHARS_PER_TOKEN
        overhead = len(proto.body(conv)) - conv.chars  # request fields + tool schemas, constant per turn
        # Per-request seed: reproducible sampling on servers that honour it (vLLM, llama.cpp).
        req_seed = int(tid[:8], 16)
        st = self.stats
        for turn_no in range(self.max_turns):
            context_action = "none"
            if (conv.chars + overhead) * tokens_per_byte > self.fold_at_tokens:
                if proto.fold(conv):
                    context_action = "truncated"
                while (conv.chars + overhead) * tokens_per_byte > self.fold_at_tokens and proto.summarize(conv):
                    context_action = "summarized"
                if context_action != "none":
                    context_events += 1
                    st.context_events += 1
                if (conv.chars + overhead) * tokens_per_byte > self.hard_limit_tokens:
                    status, error = "error", "context_exhausted: the prompt no longer fits after folding"
                    break
            body = proto.body(conv, req_seed + turn_no)
            st.in_flight += 1
            try:
                resp, n_retries, latency_ms = await self.teacher.post(proto.path, body)
            except TeacherError as e:
                status, error = "error", str(e)
                errors += 1
                break
            finally:
                st.in_flight -= 1
            retries += n_retries
            turn = proto.parse(resp)
            p_tok = turn.prompt_tokens
            if p_tok:
                tokens_per_byte = p_tok / max(1, len(body))
            else:
                p_tok = int(conv.chars * tokens_per_byte)
            c_tok = turn.completion_tokens if turn.completion_tokens is not None else len(turn.content) // 4 + 1
            tokens_in += p_tok
            tokens_out += c_tok
            budget_used += c_tok
            proto.append_turn(conv, turn)
            a = turn.action
            rows.append({
                "trajectory_id": tid, "question_id": question_id, "turn_index": len(rows), "role": "assistant",
                "content": turn.content, "reasoning": turn.reasoning,
                "tool_call_id": a.call_id if a else turn.message.get("_call_id"),
                "tool_name": a.name if a else None, "tool_args": a.args if a else None,
                "raw_output": turn.raw_output, "parse_error": turn.parse_error, "tokens_in": p_tok,
                "tokens_out": c_tok, "latency_ms": latency_ms, "error": None, "context_action": context_action})
            st.turns += 1
            st.tokens += p_tok + c_tok
            if turn.parse_error:
                errors += 1
                st.errors += 1
            if a is not None:
                tool_calls += 1
                if a.name == "answer":
                    status, final_answer = "answered", a.args["text"]
                    break
            t0 = time.perf_counter()
            obs, is_error = self.observe(turn)
            env_ms = (time.perf_counter() - t0) * 1e3
            role, call_id = proto.append_observation(conv, turn, obs)
            obs_tok = int(len(obs) / OBS_CHARS_PER_TOKEN)
            budget_used += obs_tok
            rows.append({
                "trajectory_id": tid, "question_id": question_id, "turn_index": len(rows), "role": role,
                "content": obs, "tool_call_id": call_id, "tool_name": a.name if a else None,
                "tokens_in": obs_tok, "latency_ms": env_ms, "error": obs if is_error else None,
                "context_action": "none"})
            if budget_used >= self.token_budget:
                status = "token_budget"
                break
        finished = datetime.now(UTC)
        traj = {
            "trajectory_id": tid, "question_id": question_id, "attempt": attempt,
            "teacher_backend": self.teacher.backend, "teacher_model": self.teacher.model, "status": status,
            "final_answer": final_answer, "num_turns": sum(1 for r in rows if r["role"] == "assistant"),
            "num_tool_calls": tool_calls, "tokens_in": tokens_in, "tokens_out": tokens_out, "retries": retries,
            "errors": errors, "context_events": context_events, "error": error, "started_at": started,
            "finished_at": finished, "wall_seconds": time.monotonic() - t_start}
        st.trajectories += 1
        st.retries += retries
        st.status[status] = st.status.get(status, 0) + 1
        if status == "error":
            st.errors += 1
        return traj, rows

    async def run_one(self, qid: str, question: str, attempt: int) -> None:
        traj, rows = await self.roll_out(qid, question, attempt)
        if self.sink is not None:
            await self.sink.add(traj, rows)

    async def run(self, items: list[tuple[str, str, int]]) -> None:
        """Roll out every (question_id, question, attempt); flushes the sink at the end.

        Coroutines are admitted in waves of 2x max_in_flight so a million queued
        questions do not become a million live coroutines at once.
        """
        window = max(2 * self.teacher.max_in_flight, 1)
        pending: set[asyncio.Task[None]] = set()
        try:
            for qid, question, attempt in items:
                if len(pending) >= window:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for d in done:
                        d.result()
                pending.add(asyncio.create_task(self.run_one(qid, question, attempt)))
            if pending:
                for d in asyncio.as_completed(pending):
                    await d
        finally:
            for p in pending:
                p.cancel()
            if self.sink is not None:
                await self.sink.flush()


def _items(cfg: Config, batches: list[RolloutBatch]) -> list[tuple[str, str, int]]:
    q = _questions(cfg)
    text = dict(zip(q.column("question_id").to_pylist(), q.column("question").to_pylist(), strict=True))
    done = existing_ids(cfg.run.out, "trajectories", "trajectory_id")
    out = []
    for b in batches:
        for qid, attempt in b.items:
            if trajectory_id(qid, attempt, cfg.teacher.model, cfg.run.seed) not in done:
                out.append((qid, text[qid], attempt))
    return out


INTERRUPTED = ("interrupted: the process died after writing this trajectory's turns and before its "
               "trajectory row; closed on resume")


def close_orphans(cfg: Config, items: list[tuple[str, str, int]]) -> tuple[list[tuple[str, str, int]], int]:
    """Write a trajectory row (status "error") for each item whose turns exist without one.

    A crash between the turns shard and the trajectories shard of one flush leaves such turns.
    Re-rolling them would write a second set of turns under the same (trajectory_id, turn_index),
    so instead the turns already written are kept and their trajectory is closed as interrupted.
    Only this batch's ids are considered, so concurrent workers on other batches are unaffected.
    Returns the items still to roll out and the number closed.
    """
    tids = {trajectory_id(qid, a, cfg.teacher.model, cfg.run.seed): (qid, a) for qid, _, a in items}
    turns = read_table(cfg.run.out, "turns", columns=["trajectory_id", "role", "tool_name", "tokens_in",
                                                      "tokens_out", "parse_error"])
    if turns.num_rows == 0:
        return items, 0
    import pyarrow.compute as pc

    mine = turns.filter(pc.is_in(turns.column("trajectory_id"), value_set=pa.array(list(tids), pa.string())))
    orphans = set(mine.column("trajectory_id").to_pylist())
    if not orphans:
        return items, 0
    rows = []
    for tid in sorted(orphans):
        t = mine.filter(pc.equal(mine.column("trajectory_id"), tid)).to_pylist()
        asst = [r for r in t if r["role"] == "assistant"]
        qid, attempt = tids[tid]
        rows.append({"trajectory_id": tid, "question_id": qid, "attempt": attempt, "teacher_backend": cfg.teacher.backend,
                     "teacher_model": cfg.teacher.model, "status": "error", "num_turns": len(asst),
                     "num_tool_calls": sum(1 for r in asst if r["tool_name"]),
                     "tokens_in": sum(r["tokens_in"] or 0 for r in asst),
                     "tokens_out": sum(r["tokens_out"] or 0 for r in asst), "retries": 0,
                     "errors": sum(1 for r in asst if r["parse_error"]) + 1, "context_events": 0,
                     "error": INTERRUPTED})
    write_shard(cfg.run.out, "trajectories", pa.Table.from_pylist(rows, schema=schema_for("trajectories")),
                run_id=cfg.run_id, config_hash=cfg.config_hash())
    log.warning("closed %d interrupted trajectories whose turns were written before a crash", len(rows))
    return [it for it in items if trajectory_id(it[0], it[2], cfg.teacher.model, cfg.run.seed) not in orphans], len(rows)


async def _run_async(cfg: Config, batches: list[RolloutBatch], *, policy: Any = None,
                     progress: Callable[[RolloutStats], None] | None = None,
                     stats: RolloutStats | None = None) -> dict[str, Any]:
    stats = stats or RolloutStats()
    items = _items(cfg, batches)
    stats.skipped = sum(len(b.items) for b in batches) - len(items)
    items, closed = close_orphans(cfg, items)
    stats.status["interrupted_closed"] = closed
    if not closed:
        del stats.status["interrupted_closed"]
    if not items:
        return {**stats.as_dict(), "written": closed}
    env = await asyncio.to_thread(Environment.from_tables, cfg.run.out, page_chars=cfg.rollout.page_chars)
    sink = TrajectorySink(cfg)
    async with make_teacher(cfg, policy=policy) as teacher:
        engine = RolloutEngine(cfg, teacher, env, sink, stats)
        ticker = asyncio.create_task(_tick(progress, stats)) if progress else None
        try:
            await engine.run(items)
        finally:
            if ticker:
                ticker.cancel()
                progress(stats)  # type: ignore[misc]
    d = stats.as_dict()
    d["written"] = sink.written + closed
    return d


async def _tick(progress: Callable[[RolloutStats], None], stats: RolloutStats) -> None:
    while True:
        progress(stats)
        await asyncio.sleep(0.25)


def roll_out_batch(cfg: Config, batch: RolloutBatch, *, policy: Any = None) -> dict[str, Any]:
    """Roll out one batch (skipping trajectories already written); returns stats."""
    return asyncio.run(_run_async(cfg, [batch], policy=policy))


def run_rollouts(cfg: Config, *, policy: Any = None,
                 progress: Callable[[RolloutStats], None] | None = None) -> dict[str, Any]:
    """Plan and roll out every pending trajectory with one teacher; returns stats."""
    batches = plan_rollouts(cfg)
    if not batches:
        return {**RolloutStats().as_dict(), "written": 0}
    return asyncio.run(_run_async(cfg, batches, policy=policy, progress=progress))
