"""The screen stage (src/hopforge/filters/screen.py): question-level filters before any rollout.

Decontamination, near-duplicate questions and closed-book difficulty each write a ``rejects`` row
(stage "screen") with a stable reason; the rollout stage then never sends the teacher a request
about a screened-out question (counted on the scripted server); an empty screen makes every later
stage skip with its reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from hopforge.errors import TeacherError
from hopforge.filters import ScreenStage, ScreenStats, run_filters
from hopforge.labels.stage import run_labels
from hopforge.rollouts import run_rollouts
from hopforge.stage import resolve, run_stage
from hopforge.storage import read_table
from hopforge.testing.scripted import OraclePolicy, ScriptedRequest, ScriptedServer
from tests.filters.trajectory_builders import FakeTeacher
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki

RIVER, FOUNDER, INJECT = QUESTIONS
NEAR_DUP = {**RIVER, "question_id": "q-river-again", "question": "Which river flows through the capital city of Veloria?"}
FAILED = {**FOUNDER, "question_id": "q-failed", "question": "Which maker of cameras failed its checks?", "passed": False}


class Recording(OraclePolicy):
    def __init__(self, questions) -> None:
        super().__init__(questions)
        self.asked: Counter[str] = Counter()

    def __call__(self, req: ScriptedRequest):
        self.asked[req.question] += 1
        return super().__call__(req)


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    p = tmp_path / "bench.txt"
    p.write_text("What is the capital of France?\n" + FOUNDER["question"] + "\n", encoding="utf-8")
    return p


def screen_cfg(out: Path, bench: Path | None = None, **over):
    return rollout_cfg(out, **{"screen.minhash_threshold": 0.5, "screen.decontam_ngram": 8,
                               **({"screen.decontaminate": str(bench)} if bench else {}), **over})


def closed_book(answers: dict[str, str], calls: list[str]):
    """A closed-book solver answering from ``answers`` (else "no idea"), recording question ids."""

    async def solve(q, attempt):
        calls.append(q["question_id"])
        return answers.get(q["question_id"], "no idea")

    return solve


def screen(cfg, solver=None, client=None) -> ScreenStats:
    stats = run_stage("screen", cfg, stage=ScreenStage(client, solver))
    assert isinstance(stats, ScreenStats)
    return stats


def test_each_question_filter_rejects_with_its_step_and_reason(tmp_path: Path, bench: Path) -> None:
    out = tmp_path / "out"
    write_wiki(out, [RIVER, NEAR_DUP, FOUNDER, INJECT, FAILED], screen=False)
    cfg = screen_cfg(out, bench, **{"screen.difficulty_k": 2})
    calls: list[str] = []
    stats = screen(cfg, closed_book({"q-inject": "Nothing"}, calls))
    rejects = {r["row_id"]: r for r in read_table(out, "rejects").to_pylist()}
    assert {k: (r["step"], r["reason"]) for k, r in rejects.items()} == {
        "q-founder": ("decontaminate", "benchmark_overlap"),
        "q-river-again": ("near_duplicate_question", "near_duplicate_question"),
        "q-inject": ("difficulty", "solvable_without_tools"),
    }
    assert all(r["stage"] == "screen" and r["row_table"] == "questions" for r in rejects.values())
    assert rejects["q-founder"]["detail"].startswith("bench.txt line 2 shares")
    assert rejects["q-river-again"]["detail"].startswith("of question q-river (estimated jaccard")
    assert rejects["q-inject"]["detail"] == "closed-book solve rate 1.00 > 0.0"
    # Closed-book attempts only for questions still in (not the decontaminated, the duplicate or the failed one).
    assert Counter(calls) == {"q-river": 2, "q-inject": 2}
    diff = {r["question_id"]: r for r in read_table(out, "difficulty").to_pylist()}
    assert set(diff) == {"q-river", "q-inject"}
    assert (diff["q-river"]["solve_rate_no_tools"], diff["q-inject"]["solve_rate_no_tools"]) == (0.0, 1.0)
    assert diff["q-river"]["k"] == 2 and diff["q-river"]["solve_rate_tools"] is None
    assert diff["q-river"]["teacher_model"] == "scripted"
    assert (stats.questions, stats.screened_in, stats.calibrated) == (4, 1, 2)
    assert stats.rejects == {"benchmark_overlap": 1, "near_duplicate_question": 1, "solvable_without_tools": 1}
    assert stats.rows == {"difficulty": 2, "rejects": 3} and stats.empty is None
    run = resolve(cfg, "screen")
    assert read_table(out, "rejects", run=run.fingerprint).num_rows == 3  # the screen's own partition

    # Complete: a re-run asks the teacher nothing and counts nothing.
    again = screen(cfg, closed_book({}, calls))
    assert again.batches == again.batches_skipped == 1 and (again.questions, again.calibrated) == (0, 0)
    assert len(calls) == 4 and read_table(out, "rejects").num_rows == 3

    # The rollout stage sends the teacher nothing about a screened-out or failed question.
    policy = Recording([RIVER, NEAR_DUP, FOUNDER, INJECT])
    with ScriptedServer(policy) as server:
        rolled = run_rollouts(screen_cfg(out, bench, **{"screen.difficulty_k": 2, "teacher.base_url": server.url}))
    assert set(policy.asked) == {RIVER["question"]} and server.requests == 7
    assert rolled.trajectories == 1 and rolled.status == {"answered": 1}


def test_screen_settings_are_part_of_the_chain(tmp_path: Path, bench: Path) -> None:
    out = tmp_path / "out"
    write_wiki(out, [RIVER, NEAR_DUP, FOUNDER, INJECT], screen=False)
    loose = screen(screen_cfg(out))
    strict = screen(screen_cfg(out, **{"screen.minhash_threshold": 0.9}))  # the pair is no longer near
    assert loose.screened_in == 3 and strict.screened_in == 4 and strict.batches_skipped == 0
    a, b = resolve(screen_cfg(out), "rollouts"), resolve(screen_cfg(out, **{"screen.minhash_threshold": 0.9}), "rollouts")
    assert a.inputs["screen"] != b.inputs["screen"] and a.fingerprint != b.fingerprint
    assert a.inputs["questions"] == b.inputs["questions"]  # the question stage did not run again
    # The benchmark file is part of the screen's identity: a different file is a different screen.
    assert resolve(screen_cfg(out, bench), "screen").fingerprint != resolve(screen_cfg(out), "screen").fingerprint


def test_closed_book_attempts_go_to_the_teacher_client(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_wiki(out, screen=False)
    teacher = FakeTeacher(lambda prompt: " Sella\n" if "river" in prompt else "I do not know")
    stats = screen(screen_cfg(out, **{"screen.difficulty_k": 3}), client=teacher)
    assert len(teacher.requests) == 9 and all("without searching" in p for p in teacher.requests)
    assert [r["row_id"] for r in read_table(out, "rejects").to_pylist()] == ["q-river"]
    assert stats.screened_in == 2 and stats.calibrated == 3


def test_a_dead_teacher_fails_the_screen_without_writing_and_a_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_wiki(out, screen=False)
    cfg = screen_cfg(out, **{"screen.difficulty_k": 1})

    async def dead(q, attempt):
        raise TeacherError("teacher unreachable after 4 retries")

    with pytest.raises(TeacherError, match="unreachable"):
        screen(cfg, dead)
    assert read_table(out, "rejects").num_rows == read_table(out, "difficulty").num_rows == 0
    assert resolve(cfg, "screen").complete() is None  # no rate was invented for a dead teacher
    stats = screen(cfg, closed_book({}, []))
    assert stats.batches_skipped == 0 and stats.calibrated == 3 and stats.screened_in == 3


def test_an_empty_screen_makes_every_later_stage_skip_with_its_reason(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_wiki(out, [RIVER, NEAR_DUP], screen=False)
    cfg = screen_cfg(out, **{"screen.difficulty_k": 1})
    stats = screen(cfg, closed_book({"q-river": "Sella"}, []))
    reason = ("0 of 2 questions passed the screen (2 near-duplicate, contaminated or solvable closed-book; "
              "see rejects where stage = 'screen')")
    assert stats.empty == reason and stats.screened_in == 0
    with ScriptedServer(Recording([RIVER, NEAR_DUP])) as server:
        rolled = run_rollouts(screen_cfg(out, **{"screen.difficulty_k": 1, "teacher.base_url": server.url}))
    assert rolled.empty == reason and rolled.trajectories == 0 and server.requests == 0
    # Each later stage skips with the screen's reason (not "run `hopforge generate` first", which would
    # only skip again).
    assert run_filters(cfg).empty == reason and run_labels(cfg).empty == reason
    assert read_table(out, "trajectories").num_rows == read_table(out, "kept").num_rows == 0
