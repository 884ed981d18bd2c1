"""Difficulty calibration: per-question solve rates without and with tools (ASearcher / DeepDive style).

A question worth training a search agent on is one the teacher cannot answer
from memory but can answer by searching. :func:`calibrate` asks an injected
solver ``k`` times per question in each mode and stores both rates in
``difficulty``; :func:`difficulty_verdicts` then applies the configured cut, and
users can pick their own later from the stored rates (``hopforge sql``).

Solvers are plain ``async (question_row, attempt) -> answer`` callables, so tests
inject fakes; :func:`no_tool_solver` wraps the teacher's ``complete_text``, and
:func:`trajectory_outcomes` reads the tool attempts the rollout stage already made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from hopforge.errors import TeacherError
from hopforge.text.answers import answer_is_correct
from hopforge.llm.client import TextClient

Solver = Callable[[dict[str, Any], int], Awaitable[str]]

NO_TOOL_PROMPT = """Answer the question from memory, without searching. Reply with the answer only (a name,
title, date or number), no explanation.
Question: {question}
Answer:"""


def is_correct(prediction: str, question: dict[str, Any], f1_threshold: float) -> bool:
    return answer_is_correct(prediction, question.get("answer") or "", question.get("answer_aliases") or (),
                             f1_threshold)


def no_tool_solver(client: TextClient, max_tokens: int = 48, temperature: float = 0.7) -> Solver:
    """Closed-book attempts; a temperature above 0 makes the k attempts differ."""

    async def solve(question: dict[str, Any], attempt: int) -> str:
        prompt = NO_TOOL_PROMPT.format(question=question["question"])
        text = await client.complete_text([{"role": "user", "content": prompt}], max_tokens=max_tokens,
                                          temperature=temperature, stop=["\n"])
        return text.strip()

    return solve


def trajectory_outcomes(trajectories: Iterable[dict[str, Any]], questions: dict[str, dict[str, Any]],
                        f1_threshold: float, k: int) -> dict[str, list[bool]]:
    """Correctness of the first ``k`` rollout attempts per question (the with-tools solve attempts)."""
    by_q: dict[str, list[tuple[int, str, bool]]] = {}
    for t in trajectories:
        q = questions.get(t["question_id"])
        if q is None:
            continue
        ok = t.get("status") == "answered" and is_correct(t.get("final_answer") or "", q, f1_threshold)
        by_q.setdefault(t["question_id"], []).append((t.get("attempt") or 0, t["trajectory_id"], ok))
    # Order by attempt (then id, for ties), never by outcome, so the first k are not cherry-picked.
    return {qid: [ok for *_, ok in sorted(v, key=lambda x: x[:2])[:k]] for qid, v in by_q.items()}


async def calibrate(
    questions: Sequence[dict[str, Any]],
    *,
    k: int,
    solve_no_tools: Solver,
    solve_with_tools: Solver | None = None,
    tool_outcomes: dict[str, list[bool]] | None = None,
    f1_threshold: float = 0.8,
    teacher_model: str = "",
    concurrency: int = 16,
) -> list[dict[str, Any]]:
    """``difficulty`` rows: k no-tool attempts and k tool attempts (or recorded tool outcomes) per question.

    A solver that raises counts as a failed attempt (it did not solve the
    question); the rate is still over k, so a flaky answer makes a question look
    harder, never easier. A :class:`TeacherError` (the client gave up after its
    retries) aborts instead: a dead teacher would make every question look hard.
    """
    if k < 1:
        raise ValueError("calibrate needs k >= 1 attempts per mode")
    sem = asyncio.Semaphore(concurrency)

    async def attempt(solver: Solver, q: dict[str, Any], i: int) -> bool:
        async with sem:
            try:
                return is_correct(await solver(q, i), q, f1_threshold)
            except TeacherError:
                raise  # the client already retried: the teacher is down, rates would be fiction
            except Exception:  # noqa: BLE001 - see docstring: a failed attempt, not a failed run
                return False

    async def rate(solver: Solver, q: dict[str, Any]) -> float:
        results = await asyncio.gather(*(attempt(solver, q, i) for i in range(k)))
        return sum(results) / k

    async def row(q: dict[str, Any]) -> dict[str, Any]:
        no_tools = await rate(solve_no_tools, q)
        if solve_with_tools is not None:
            tools: float | None = await rate(solve_with_tools, q)
        else:
            outcomes = (tool_outcomes or {}).get(q["question_id"])
            tools = sum(outcomes) / len(outcomes) if outcomes else None
        return {"question_id": q["question_id"], "k": k, "solve_rate_no_tools": no_tools,
                "solve_rate_tools": tools, "teacher_model": teacher_model}

    return list(await asyncio.gather(*(row(q) for q in questions)))


def difficulty_verdicts(rows: Iterable[dict[str, Any]], max_no_tools: float,
                        min_tools: float) -> dict[str, tuple[str, str]]:
    """Questions to drop: solved closed-book more often than ``max_no_tools``, or with tools no more than ``min_tools``."""
    out: dict[str, tuple[str, str]] = {}
    for r in rows:
        nt, t = r["solve_rate_no_tools"], r["solve_rate_tools"]
        if nt is not None and nt > max_no_tools:
            out[r["question_id"]] = ("solvable_without_tools", f"no-tool solve rate {nt:.2f} > {max_no_tools}")
        elif t is not None and t <= min_tools:
            out[r["question_id"]] = ("unsolved_with_tools", f"tool solve rate {t:.2f} <= {min_tools}")
    return out
