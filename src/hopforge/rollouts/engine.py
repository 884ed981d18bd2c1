"""The long-horizon rollout engine: questions in, ``trajectories`` + ``turns`` out.

One coroutine per trajectory; the :class:`~hopforge.llm.client.Teacher`
bounds requests in flight globally (``rollout.max_in_flight``) and retries
transient failures. Each trajectory ends when the model answers, or at the turn
limit, the token budget, or an unrecoverable teacher error, and is then written
with its turns: every flush (``rollout.flush_every`` trajectories or
``rollout.flush_seconds``) commits one ``turns`` and one ``trajectories`` shard as a
group, so a kill at any point leaves each trajectory either fully written or absent.
A re-run of a batch skips the trajectory ids its earlier flushes committed, so a
kill -9 loses only the trajectories in flight and those buffered since the last flush.

Token budget: the sum of completion tokens plus estimated observation tokens,
i.e. the new content a trajectory adds (prompt tokens re-counted every turn would
make the budget quadratic in the horizon).

Context: the prompt size is estimated from the last request's prompt tokens per
byte. Between folds the history only grows at its end, so a server with prefix
caching prefills just what each turn adds. Past ``rollout.context_fold_at`` x
``teacher.context_tokens`` (minus room for the reply) the history is folded once,
in one large step, down to ``rollout.context_fold_to`` x ``teacher.context_tokens``
(``context_action = "summarized"``): its oldest turns stay as they are (the cached
prefix), the middle becomes a summary of the calls made and what they returned, the
last turn stays. Only if that cannot fit are old observations cut to one line
(``"truncated"``). A fold happens every (fold_at - fold_to) x context of new
content, so the re-sent share of the prompt stays small (benchmarks/rollouts.py).

Routing: every request names its trajectory (``affinity`` for the teacher's endpoint
pool, ``user`` in the body for servers and routers), so its turns stay on one
replica; the endpoint that served it is recorded in ``trajectories.endpoint``.
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
from hopforge.errors import TeacherError
from hopforge.storage import content_id, schema_for
from hopforge.rollouts.environment import Environment
from hopforge.rollouts.protocol import ChatProtocol, ModelTurn, TextProtocol, make_protocol
from hopforge.llm.client import Teacher

log = logging.getLogger(__name__)

OBS_CHARS_PER_TOKEN = 4.0  # observation token estimate when the server reports none


@dataclass
class LiveStats:
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


def trajectory_id(question_id: str, attempt: int, model: str, seed: int, run: str = "") -> str:
    """Content id of one attempt at a question. ``run`` (the rollout stage's fingerprint) makes the
    trajectories of two rollout runs (say, two temperatures) distinct rows everywhere, not only
    within their partitions."""
    return content_id(question_id, attempt, model, seed, *([run] if run else []))


class TrajectorySink:
    """Buffers finished trajectories and commits each flush's turns and trajectories as one group.

    ``commit`` is ``StageRun.commit`` bound to the batch (any callable taking the tables works).
    The Parquet encode + fsync runs in a worker thread so the event loop keeps serving the
    other trajectories while a shard is written.
    """

    def __init__(self, commit: Callable[[dict[str, pa.Table]], Any], *, flush_every: int,
                 flush_seconds: float) -> None:
        self.commit = commit
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
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
        self.commit({"turns": pa.Table.from_pylist(turns, schema=schema_for("turns")),
                     "trajectories": pa.Table.from_pylist(trajs, schema=schema_for("trajectories"))})


class RolloutEngine:
    """Runs trajectories against one teacher and one environment."""

    def __init__(self, cfg: Config, teacher: Teacher, env: Environment, sink: TrajectorySink | None,
                 stats: LiveStats | None = None, protocol: ChatProtocol | TextProtocol | None = None,
                 id_run: str = "") -> None:
        self.cfg = cfg
        self.id_run = id_run
        self.teacher = teacher
        self.env = env
        self.sink = sink
        self.stats = stats or LiveStats()
        t = cfg.teacher
        self.protocol: ChatProtocol | TextProtocol = protocol or make_protocol(
            teacher.kind, teacher.model, max_tokens=t.max_tokens, temperature=t.temperature,
            max_k=cfg.rollout.search_k * 2, tool_parser=t.tool_parser if teacher.kind == "chat" else "none")
        r = cfg.rollout
        self.max_turns = r.max_turns
        self.token_budget = r.token_budget
        self.search_k = r.search_k
        reply_room = cfg.teacher.max_tokens
        ctx = cfg.teacher.context_tokens
        self.fold_at_tokens = max(256, r.context_fold_at * ctx - reply_room)
        self.fold_to_tokens = max(128, r.context_fold_to * ctx - reply_room)
        self.hard_limit_tokens = ctx - reply_room
        # Summary lines (~40 tokens each) get about 5 % of the window: a fold re-sends the summary,
        # so its size is what a fold costs a prefix cache.
        self.summary_lines = max(4, min(40, int(0.05 * ctx / 40)))

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
        tid = trajectory_id(question_id, attempt, self.teacher.model, cfg.run.seed, self.id_run)
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
        overhead = len(proto.body(conv, 0, tid)) - conv.chars  # request fields + tool schemas, constant per turn
        # Per-request seed: reproducible sampling on servers that honour it (vLLM, llama.cpp).
        req_seed = int(tid[:8], 16)
        st = self.stats
        teacher = self.teacher
        for turn_no in range(self.max_turns):
            context_action = "none"
            if (conv.chars + overhead) * tokens_per_byte > self.fold_at_tokens:
                # One large step, not a little every turn: the prefix a server cached survives until the next.
                target = int(self.fold_to_tokens / tokens_per_byte) - overhead
                if proto.fold(conv, target, self.summary_lines):
                    context_action = "summarized"
                if (conv.chars + overhead) * tokens_per_byte > self.hard_limit_tokens and proto.stub_observations(conv):
                    context_action = "truncated"
                if context_action != "none":
                    context_events += 1
                    st.context_events += 1
                if (conv.chars + overhead) * tokens_per_byte > self.hard_limit_tokens:
                    status, error = "error", "context_exhausted: the prompt no longer fits after folding"
                    break
            body = proto.body(conv, req_seed + turn_no, tid)
            st.in_flight += 1
            try:
                resp, n_retries, latency_ms = await teacher.post(proto.path, body, tid)
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
        endpoint = teacher.endpoint_of(tid)
        teacher.forget(tid)
        traj = {
            "trajectory_id": tid, "question_id": question_id, "attempt": attempt,
            "teacher_backend": self.teacher.backend, "teacher_model": self.teacher.model, "status": status,
            "final_answer": final_answer, "num_turns": sum(1 for r in rows if r["role"] == "assistant"),
            "num_tool_calls": tool_calls, "tokens_in": tokens_in, "tokens_out": tokens_out, "retries": retries,
            "errors": errors, "context_events": context_events, "error": error, "started_at": started,
            "finished_at": finished, "wall_seconds": time.monotonic() - t_start, "endpoint": endpoint}
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


async def run_engine(cfg: Config, teacher: Teacher, env: Environment, sink: TrajectorySink | None,
                     items: list[tuple[str, str, int]], stats: LiveStats | None = None,
                     progress: Callable[[LiveStats], None] | None = None, id_run: str = "") -> LiveStats:
    """Roll out ``items`` (question_id, question, attempt) with a live progress callback (4 Hz)."""
    stats = stats or LiveStats()
    engine = RolloutEngine(cfg, teacher, env, sink, stats, id_run=id_run)
    ticker = asyncio.create_task(_tick(progress, stats)) if progress else None
    try:
        await engine.run(items)
    finally:
        if ticker:
            ticker.cancel()
            progress(stats)  # type: ignore[misc]
    return stats


async def _tick(progress: Callable[[LiveStats], None], stats: LiveStats) -> None:
    while True:
        progress(stats)
        await asyncio.sleep(0.25)
