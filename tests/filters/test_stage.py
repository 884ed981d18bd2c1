"""The filter stage (src/hopforge/filters/stage.py) on hand-built trajectories recorded as a complete
rollout run: every trajectory lands in kept or in rejects with its step and reason, the funnel adds
up, a complete run is skipped, a change to its settings re-filters under a new fingerprint, and a
crash or a dead judge commits nothing."""

from pathlib import Path

import pytest
from tests.filters.trajectory_builders import (
    GOOD_ACTIONS,
    Q2,
    FakeTeacher,
    funnel_episodes,
    make_episode,
    question,
    write_dataset,
)

from hopforge.config import load_config
from hopforge.errors import TeacherError
from hopforge.filters import FilterStats, run_filters
from hopforge.labels.stage import run_labels
from hopforge.stage import resolve
from hopforge.storage import read_manifest, read_table
from hopforge.testing.stages import complete_chain

WANT_REJECTS = {
    "dup-of-good": ("duplicate_trajectory", "duplicate_trajectory"),
    "wrong": ("answer", "answer_mismatch"),
    "loop": ("degeneration", "repeated_call_loop"),
    "lazy": ("effort", "too_few_tool_calls"),
    "unfinished": ("format", "status_turn_limit"),
    "unparseable": ("format", "unparseable_call"),
}


def cfg_for(out: Path, **overrides):
    return load_config(None, {"run.out": str(out), **overrides})


def dataset(out: Path, *extra, **overrides):
    cfg = cfg_for(out, **overrides)
    write_dataset(cfg, [question(), Q2], funnel_episodes(*extra), turns_per_shard=25)
    return cfg


def partition(cfg, table: str) -> list[dict]:
    return read_table(cfg.run.out, table, run=resolve(cfg, "filters").fingerprint).to_pylist()


def test_every_trajectory_is_kept_or_rejected_with_its_step_and_reason(out):
    cfg = dataset(out)
    stats = run_filters(cfg)
    assert isinstance(stats, FilterStats)
    kept = {r["trajectory_id"]: r for r in partition(cfg, "kept")}
    rejects = {r["row_id"]: r for r in partition(cfg, "rejects")}
    assert set(kept) == {"good", "alias", "other-q"}
    assert {k: (v["step"], v["reason"]) for k, v in rejects.items()} == WANT_REJECTS
    assert all(r["stage"] == "filter" and r["row_table"] == "kept" for r in rejects.values())
    assert rejects["wrong"]["detail"].startswith("question q1: ")
    assert kept["alias"]["correct"] and kept["alias"]["f1"] == 1.0 and kept["alias"]["action_hash"]
    assert (stats.trajectories, stats.kept, stats.rejected) == (9, 3, 6)
    assert stats.rejects == {"duplicate_trajectory": 1, "answer_mismatch": 1, "repeated_call_loop": 1,
                             "too_few_tool_calls": 1, "status_turn_limit": 1, "unparseable_call": 1}
    assert stats.rows == {"kept": 3, "rejects": 6} and stats.batches == 1 and stats.answer_judge_requests == 0
    steps = stats.steps
    assert [s["step"] for s in steps] == ["format", "effort", "degeneration", "answer", "duplicate_trajectory"]
    assert steps[0]["in"] == 9 and steps[-1]["kept"] == 3
    for i, s in enumerate(steps):
        assert s["in"] == s["kept"] + s["rejected"]
        assert sum(n for _, n in s["top_reasons"]) == s["rejected"]
        if i:
            assert s["in"] == steps[i - 1]["kept"]
    # The funnel is recorded with the stage run (what `hopforge runs` and the flows report read).
    assert resolve(cfg, "filters").complete()["stats"]["steps"] == steps


def test_a_rerun_is_skipped_with_zero_counts(out):
    cfg = dataset(out)
    run_filters(cfg)
    digests = {e.path: e.sha256 for t in ("kept", "rejects") for e in read_manifest(out, t)}
    again = run_filters(cfg)
    assert again.batches == again.batches_skipped == 1 and again.skipped
    assert (again.trajectories, again.kept, again.rejected, again.steps, again.rows) == (0, 0, 0, [], {})
    assert {e.path: e.sha256 for t in ("kept", "rejects") for e in read_manifest(out, t)} == digests


def test_a_changed_f1_threshold_refilters_under_a_new_fingerprint_and_relabels(out):
    # "Danube delta" against "The Danube": token F1 0.67, a miss at 0.8 and a match at 0.6.
    delta = make_episode([*GOOD_ACTIONS[:-1], ("search", "delta", "The delta."), ("answer", "Danube delta")],
                         tid="delta")
    strict = dataset(out, delta)
    run_filters(strict)
    run_labels(strict)
    assert {r["row_id"]: r["reason"] for r in partition(strict, "rejects")}["delta"] == "answer_mismatch"
    old_kept = partition(strict, "kept")
    loose = cfg_for(out, **{"filters.f1_threshold": 0.6})
    assert resolve(loose, "filters").fingerprint != resolve(strict, "filters").fingerprint
    assert resolve(loose, "filters").inputs == resolve(strict, "filters").inputs  # same rollouts read
    stats = run_filters(loose)
    assert stats.batches_skipped == 0 and stats.trajectories == 10 and stats.kept == 4  # not silently skipped
    assert {r["trajectory_id"] for r in partition(loose, "kept")} == {"good", "alias", "other-q", "delta"}
    assert next(r for r in partition(loose, "kept") if r["trajectory_id"] == "delta")["f1"] == pytest.approx(2 / 3)
    assert partition(strict, "kept") == old_kept  # the old partition is untouched
    # The label stage follows: its fingerprint changes with its input, and it labels the new kept set.
    labels = run_labels(loose)
    assert labels.batches_skipped == 0 and labels.trajectories == 4
    new_labels = read_table(out, "turn_labels", run=resolve(loose, "labels").fingerprint)
    old_labels = read_table(out, "turn_labels", run=resolve(strict, "labels").fingerprint)
    assert set(new_labels.column("trajectory_id").to_pylist()) == {"good", "alias", "other-q", "delta"}
    assert "delta" not in set(old_labels.column("trajectory_id").to_pylist())


def test_with_tools_difficulty_drops_questions_the_teacher_rarely_solves(out):
    other_search = ("search", "Quux director", "The Quux director made a film.")
    q2_actions = [other_search, ("search", "Quux film", "Film. The novel is by Jane Doe."),
                  ("visit", "Jane Doe", "Writer.")]
    cfg = cfg_for(out, **{"filters.min_solve_rate_tools": 0.5, "rollout.attempts_per_question": 2})
    eps = [make_episode(GOOD_ACTIONS, tid="q1-a0"),
           make_episode([("search", "Zorblax", "Zorblax: born in Austria."), *GOOD_ACTIONS], tid="q1-a1", attempt=1),
           make_episode([*q2_actions, ("answer", "John Roe")], tid="q2-a0", q=Q2),
           make_episode([*q2_actions, ("visit", "Film", "A film."), ("answer", "Jane Doe")], tid="q2-a1", q=Q2,
                        attempt=1)]
    write_dataset(cfg, [question(), Q2], eps)
    stats = run_filters(cfg)
    rejects = {r["row_id"]: r for r in partition(cfg, "rejects")}
    assert {k: (r["step"], r["reason"]) for k, r in rejects.items()} == {
        "q2-a0": ("answer", "answer_mismatch"), "q2-a1": ("difficulty", "unsolved_with_tools")}
    assert rejects["q2-a1"]["detail"] == "question q2: tool solve rate 0.50 <= 0.5"
    assert stats.kept == 2 and [s["step"] for s in stats.steps][-1] == "difficulty"


def test_a_crash_mid_run_commits_nothing_and_the_rerun_completes(out, monkeypatch):
    from hopforge.filters.correctness import AnswerFilter

    cfg = dataset(out)
    real = AnswerFilter.filter
    monkeypatch.setattr(AnswerFilter, "filter", lambda self, ep: (_ for _ in ()).throw(RuntimeError("judge bug")))
    with pytest.raises(RuntimeError, match="judge bug"):
        run_filters(cfg)
    # Kept and rejected rows are one group: nothing is visible, nothing is marked done.
    assert read_table(out, "kept").num_rows == read_table(out, "rejects").num_rows == 0
    run = resolve(cfg, "filters")
    assert run.complete() is None and not list((run.dir / "done").glob("*.json"))
    monkeypatch.setattr(AnswerFilter, "filter", real)
    resumed = run_filters(cfg)
    assert resumed.batches_skipped == 0 and (resumed.trajectories, resumed.kept, resumed.rejected) == (9, 3, 6)
    assert {r["trajectory_id"] for r in partition(cfg, "kept")} == {"good", "alias", "other-q"}
    assert read_table(out, "rejects").num_rows == 6


def test_an_unreachable_answer_judge_stops_without_rejecting_and_the_rerun_finishes(out):
    cfg = dataset(out, **{"filters.llm_judge": True})

    def down(prompt):
        raise ConnectionError("connection refused")

    with pytest.raises(TeacherError, match="answer judge request failed for trajectory wrong"):
        run_filters(cfg, judge=FakeTeacher(down))
    assert read_table(out, "rejects").num_rows == 0 and resolve(cfg, "filters").complete() is None
    up = FakeTeacher(lambda p: '{"verdict": "incorrect", "rationale": "The Rhine is another river."}')
    stats = run_filters(cfg, judge=up)
    assert stats.answer_judge_requests == 1 and len(up.requests) == 1
    wrong = next(r for r in partition(cfg, "rejects") if r["row_id"] == "wrong")
    assert wrong["reason"] == "answer_mismatch" and "judge incorrect: The Rhine is another river." in wrong["detail"]
    # The judge is part of the filter's identity: the same data without it is another run.
    assert resolve(cfg_for(out), "filters").fingerprint != resolve(cfg, "filters").fingerprint


def test_a_rollout_run_without_trajectories_gives_an_empty_funnel(out):
    cfg = cfg_for(out)
    complete_chain(cfg, {"questions": {"questions": [question()]}, "rollouts": {}})
    stats = run_filters(cfg)
    assert (stats.trajectories, stats.kept, stats.rejected, stats.rows) == (0, 0, 0, {})
    assert [s["in"] for s in stats.steps] == [0] * 5
    labels = run_labels(cfg)
    assert labels.batches == 0 and labels.trajectories == 0
