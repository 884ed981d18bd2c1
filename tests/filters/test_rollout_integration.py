"""Filters and labels on real trajectories from the rollout engine and its scripted teacher server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from hopforge.filters import ScreenStats, run_filters
from hopforge.labels.judge import TurnJudge
from hopforge.labels.stage import run_labels
from hopforge.llm.client import make_teacher
from hopforge.rollouts import run_rollouts
from hopforge.stage import resolve, run_stage
from hopforge.storage import query_arrow, read_table
from hopforge.storage.episodes import iter_episodes
from hopforge.testing.scripted import Reply
from tests.filters.trajectory_builders import make_episode
from tests.rollouts.rollout_fixtures import rollout_cfg, write_wiki


def rows(out: Path, sql: str) -> list[dict]:
    return query_arrow(out, sql).to_pylist()


@pytest.fixture
def oracle_run(tmp_path: Path):
    out = tmp_path / "out"
    write_wiki(out)
    cfg = rollout_cfg(out)
    run_rollouts(cfg)
    return out, cfg


def test_oracle_trajectories_filtered_and_labelled(oracle_run):
    out, cfg = oracle_run
    stats = run_filters(cfg)
    kept = rows(out, "SELECT t.question_id, k.correct, k.f1 FROM kept k JOIN trajectories t USING (trajectory_id) "
                     "ORDER BY 1")
    assert kept == [{"question_id": "q-founder", "correct": True, "f1": 1.0},
                    {"question_id": "q-river", "correct": True, "f1": 1.0}]
    # The injection question's path has one page: two calls are below filters.min_tool_calls = 3.
    [rej] = read_table(out, "rejects").to_pylist()
    assert (rej["step"], rej["reason"]) == ("effort", "too_few_tool_calls")
    assert (stats.trajectories, stats.kept, stats.rejected) == (3, 2, 1)
    labelled = run_labels(cfg)
    assert labelled.trajectories == 2 and labelled.assistant_turns == 12
    labels = rows(out, "SELECT t.question_id, t.turn_index, t.role, t.tool_name, valid_call, progress, loss_weight "
                       "FROM turns t WHERE t.question_id = 'q-river' ORDER BY t.turn_index")
    assert all(r["valid_call"] for r in labels if r["role"] == "assistant")
    # Visiting Veloria shows "The capital of Veloria is Marren": the hop-1 entity, so progress.
    assert labels[4]["tool_name"] == "visit" and labels[4]["progress"] is True and labels[5]["progress"] is True
    assert [r["loss_weight"] for r in labels if r["role"] != "assistant"] == [0.0] * 8
    assert labels[-1]["tool_name"] == "answer" and labels[-1]["loss_weight"] == 1.0


def test_loop_policy_trajectories_rejected_as_degenerate(tmp_path):
    out = tmp_path / "out"
    write_wiki(out)
    cfg = rollout_cfg(out, **{"teacher.scripted_policy": "loop"})
    run_rollouts(cfg)
    run_filters(cfg)
    reasons = {r["reason"] for r in read_table(out, "rejects").to_pylist()}
    assert reasons == {"repeated_call_loop"} and read_table(out, "kept").num_rows == 0


def test_answer_judge_through_the_teacher_client(tmp_path):
    out = tmp_path / "out"
    write_wiki(out)
    cfg = rollout_cfg(out, **{"filters.llm_judge": True, "filters.min_tool_calls": 0})
    run_rollouts(cfg)
    # Add a near miss beside the real trajectories: "Sella river" vs "Sella" has F1 0.67 < 0.8.
    q = next(q for q in read_table(out, "questions").to_pylist() if q["question_id"] == "q-river")
    ep = make_episode([("search", "Veloria capital", "Marren."), ("answer", "Sella river")], tid="near", q=q)
    resolve(cfg, "rollouts").commit({"trajectories": [ep.trajectory], "turns": ep.turns}, "extra")
    stats = run_filters(cfg)  # the oracle replies to the judge prompt with prose: malformed, never accepted
    assert stats.answer_judge_requests == 1
    [rej] = [r for r in read_table(out, "rejects").to_pylist() if r["reason"] == "answer_mismatch"]
    assert rej["row_id"] == "near" and "judge malformed" in rej["detail"]
    assert read_table(out, "kept").num_rows == 3  # the oracle's own answers pass without asking the judge


def test_turn_judge_through_the_teacher_client_one_request_per_window(oracle_run):
    out, cfg = oracle_run
    run_filters(cfg)
    requests = []

    def policy(req):
        prompt = req.body["messages"][-1]["content"]
        requests.append(prompt)
        line = prompt.rsplit("Label every assistant turn among ", 1)[1].split(":", 1)[0]
        turns = [int(t.strip()[1:]) for t in line.split(",")]
        return Reply(raw=orjson.dumps([{"turn": t, "label": "essential" if t != 2 else "not_necessary",
                                        "rationale": f"turn {t}"} for t in turns]).decode())

    async def label():
        async with make_teacher(cfg, policy=policy) as client:
            judge = TurnJudge(client, window=4)
            eps = list(iter_episodes(out, only={r["trajectory_id"] for r in read_table(out, "kept").to_pylist()}))
            return judge, [await judge.label(ep) for ep in eps]

    judge, labelled = asyncio.run(label())
    # q-river has 7 assistant turns, q-founder 5: two windows of at most 4 each, so 4 requests, not 12.
    assert judge.requests == len(requests) == 4 and judge.fallback_windows == 0
    for ep_rows in labelled:
        by_turn = {r["turn_index"]: r for r in ep_rows}
        assert by_turn[2]["judge_label"] == "not_necessary" and by_turn[2]["loss_weight"] == 0.0
        assert by_turn[4]["judge_label"] == "essential" and by_turn[4]["loss_weight"] == 1.0
        assert by_turn[3]["judge_label"] is None and by_turn[3]["loss_weight"] == 0.0


def test_run_labels_with_configured_teacher_falls_back_on_prose(oracle_run):
    # The oracle policy answers a judge prompt (an unknown question) with prose, not the JSON array.
    out, cfg = oracle_run
    run_filters(cfg)
    cfg.labels.judge = True
    stats = run_labels(cfg)
    assert stats.judge_requests == 2 and stats.judge_fallback_windows == 2  # judge_window 20: one each
    assert stats.assistant_turn_policies == {"rules-v1": 12}
    rationales = {r["judge_rationale"] for r in read_table(out, "turn_labels").to_pylist()
                  if r["judge_rationale"]}
    assert len(rationales) == 1 and rationales.pop().startswith("judge_fallback: ModelOutputError: not a JSON array")


def test_closed_book_screen_with_the_configured_teacher(tmp_path):
    # Closed-book, the oracle cannot answer (the prompt is not one of its questions): nothing is dropped,
    # and the rollouts that follow read the screened chain.
    out = tmp_path / "out"
    write_wiki(out, screen=False)
    cfg = rollout_cfg(out, **{"screen.difficulty_k": 2})
    stats = run_stage("screen", cfg)
    assert isinstance(stats, ScreenStats) and (stats.calibrated, stats.screened_in) == (3, 3)
    diff = {r["question_id"]: r for r in read_table(out, "difficulty").to_pylist()}
    assert diff["q-river"]["solve_rate_no_tools"] == 0.0 and diff["q-river"]["solve_rate_tools"] is None
    assert diff["q-river"]["teacher_model"] == "scripted" and diff["q-river"]["k"] == 2
    assert run_rollouts(cfg).trajectories == 3
    assert run_filters(cfg).kept == 2  # both answered multi-hop questions
