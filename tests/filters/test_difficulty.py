import asyncio

import pytest
from tests.filters.trajectory_builders import FakeTeacher, question, trajectory

from hopforge.errors import TeacherError
from hopforge.filters.difficulty import (
    calibrate,
    difficulty_verdicts,
    no_tool_solver,
    trajectory_outcomes,
)


def test_calibrate_with_injected_solvers():
    qs = [question("easy"), question("hard"), question("flaky")]

    async def closed_book(q, attempt):
        if q["question_id"] == "easy":
            return "Danube" if attempt % 2 == 0 else "Rhine"  # right half the time
        if q["question_id"] == "flaky":
            raise TimeoutError("teacher timed out")
        return "I don't know"

    async def with_tools(q, attempt):
        return "Danube" if q["question_id"] != "flaky" or attempt == 0 else "Rhine"

    rows = asyncio.run(calibrate(qs, k=4, solve_no_tools=closed_book, solve_with_tools=with_tools,
                                 teacher_model="fake"))
    rates = {r["question_id"]: (r["solve_rate_no_tools"], r["solve_rate_tools"]) for r in rows}
    assert rates == {"easy": (0.5, 1.0), "hard": (0.0, 1.0), "flaky": (0.0, 0.25)}
    assert all(r["k"] == 4 and r["teacher_model"] == "fake" for r in rows)
    verdicts = difficulty_verdicts(rows, max_no_tools=0.0, min_tools=0.0)
    assert verdicts == {"easy": ("solvable_without_tools", "no-tool solve rate 0.50 > 0.0")}
    assert set(difficulty_verdicts(rows, max_no_tools=0.5, min_tools=0.25)) == {"flaky"}


def test_no_tool_solver_uses_complete_text_and_tool_rates_from_trajectories():
    teacher = FakeTeacher(lambda p: " Donau\n")
    rows = asyncio.run(calibrate([question("q1")], k=3, solve_no_tools=no_tool_solver(teacher),
                                 tool_outcomes={"q1": [True, False]}))
    assert rows[0]["solve_rate_no_tools"] == 1.0 and rows[0]["solve_rate_tools"] == 0.5
    assert len(teacher.requests) == 3 and "without searching" in teacher.requests[0]
    trajs = [trajectory("t1", "q1", [("answer", "Danube")], attempt=1),
             trajectory("t0", "q1", [("answer", "Rhine")], attempt=0),
             trajectory("t2", "q1", [("answer", "Danube")], attempt=2)]
    assert trajectory_outcomes(trajs, {"q1": question()}, 0.8, k=2) == {"q1": [False, True]}


def test_calibrate_rejects_k0():
    async def solver(q, i):
        return ""

    with pytest.raises(ValueError):
        asyncio.run(calibrate([question()], k=0, solve_no_tools=solver))


def test_dead_teacher_aborts_calibration():
    async def dead(q, attempt):
        raise TeacherError("teacher unreachable after 4 retries")

    with pytest.raises(TeacherError):
        asyncio.run(calibrate([question()], k=2, solve_no_tools=dead))
