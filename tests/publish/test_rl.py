"""The RL export (src/hopforge/publish/rl.py) and the reward (src/hopforge/publish/rewards.py): one row
per question with its prompt, tools, answer, reference path and difficulty; the reward is the
correctness filter's verdict on kept and rejected trajectories alike, from TRL's and verl's side."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tests.filters.trajectory_builders import Q2, funnel_episodes, question, write_dataset

from hopforge.config import load_config
from hopforge.filters import run_filters
from hopforge.filters.correctness import AnswerFilter
from hopforge.labels.stage import run_labels
from hopforge.publish.export import export_dataset, split_of
from hopforge.publish.rewards import AnswerReward, answer_reward, compute_score, extract_answer
from hopforge.rollouts import run_rollouts
from hopforge.stage import resolve, selection_for
from hopforge.storage import read_table
from hopforge.storage.episodes import iter_episodes, load_questions
from hopforge.storage.tools import TOOL_SCHEMAS
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki


def rows_of(dest: Path) -> list[dict]:
    return [r for p in sorted((dest / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_rl_export_one_row_per_question_with_prompt_tools_answer_path_and_difficulty(tmp_path):
    out = tmp_path / "out"
    cfg = rollout_cfg(out, **{"export.validation_fraction": 0.5})
    write_wiki(out, cfg=cfg)
    run_rollouts(cfg)
    run_filters(cfg)
    run_labels(cfg)
    dest = tmp_path / "rl"
    manifest = export_dataset(cfg, "rl", dest, selection=selection_for(resolve(cfg, "labels")))
    rows = {r["question_id"]: r for r in rows_of(dest)}
    assert set(rows) == {q["question_id"] for q in QUESTIONS}
    for q in QUESTIONS:
        r = rows[q["question_id"]]
        assert r["prompt"][0]["role"] == "system" and r["prompt"][0]["content"].startswith("You are a research agent")
        assert r["prompt"][1] == {"role": "user", "content": q["question"]}
        assert json.loads(r["tools"]) == TOOL_SCHEMAS
        assert (r["answer"], r["reference_path"], r["hops"]) == (q["answer"], q["path"], len(q["path"]))
        assert r["reward_model"] == {"style": "rule", "ground_truth": q["answer"]} and r["data_source"] == "hopforge"
        assert r["extra_info"]["split"] == split_of(q["question_id"], 0.5)
        assert r["teacher_attempts"] == 1 and r["solve_rate_no_tools"] is None
    # The oracle answers the two real chains; q-inject's single call is rejected (effort), so never kept.
    assert rows["q-river"]["teacher_solved"] == 1 and rows["q-river"]["kept_trajectories"] == 1
    assert rows["q-river"]["solve_rate_tools"] == 1.0 and rows["q-river"]["mean_tool_calls_kept"] >= 3
    assert rows["q-inject"]["kept_trajectories"] == 0
    assert manifest["format"] == "rl" and sum(manifest["counts"]["questions"].values()) == 3
    assert manifest["prompt"]["system"] == "the chain's rollouts (turn 0)"
    splits = {p.name.split("-")[0] for p in (dest / "data").glob("*.parquet")}
    assert splits <= {"train", "validation"}
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(dest / "data" / "*.parquet"))["train"]
    assert len(ds) == 3 and ds[0]["prompt"][1]["role"] == "user"


def test_the_reward_agrees_with_the_filter_verdict_on_kept_and_rejected_trajectories(tmp_path):
    out = tmp_path / "out"
    cfg = load_config(None, {"run.out": str(out)})
    write_dataset(cfg, [question(), Q2], funnel_episodes())
    run_filters(cfg)
    run_labels(cfg)
    sel = selection_for(resolve(cfg, "labels"))
    dest = tmp_path / "all"
    export_dataset(cfg, "trl", dest, include_rejected=True, selection=sel)
    kept = {r["trajectory_id"]: r["correct"] for r in read_table(out, "kept", run=resolve(cfg, "filters").fingerprint)
            .to_pylist()}
    rejects = {r["row_id"]: r["reason"] for r in read_table(out, "rejects").to_pylist()}
    qs = load_questions(out, resolve(cfg, "questions").fingerprint)
    rule = AnswerFilter(cfg.filters.f1_threshold)
    verdicts = {ep.trajectory_id: rule._rule(ep)["correct"] if ep.question else False
                for ep in iter_episodes(out, run=resolve(cfg, "rollouts").fingerprint, questions=qs)}
    rows = rows_of(dest)
    assert len(rows) == 9
    reward = AnswerReward(cfg.filters.f1_threshold)
    completions = [[m for m in r["messages"] if m["role"] in ("assistant", "tool")] for r in rows]
    answers = [qs[r["question_id"]]["answer"] for r in rows]
    aliases = [qs[r["question_id"]]["answer_aliases"] for r in rows]
    scores = reward([None] * len(rows), completions, answer=answers, answer_aliases=aliases)
    seen_reasons = set()
    for r, score in zip(rows, scores, strict=True):
        tid = r["trajectory_id"]
        assert score == (1.0 if verdicts[tid] else 0.0), tid
        if tid in kept:
            assert kept[tid] and score == 1.0
        elif rejects[tid] == "answer_mismatch":
            assert score == 0.0
        seen_reasons.add(rejects.get(tid, "kept"))
    assert {"kept", "answer_mismatch", "status_turn_limit"} <= seen_reasons  # kept, wrong, unanswered
    # verl's entry point gives the same score on the rendered text of each completion.
    for r, score, a, al in zip(rows, scores, answers, aliases, strict=True):
        answer_msg = next((m for m in reversed(r["messages"]) if m["role"] == "assistant" and m["tool_calls"]), None)
        calls = answer_msg["tool_calls"] if answer_msg else []
        text = "".join(f"<tool_call>{json.dumps({'name': c['function']['name'], 'arguments': json.loads(c['function']['arguments'])})}</tool_call>"
                       for c in calls)
        assert compute_score("hopforge", text, a, {"answer_aliases": al, "f1_threshold": 0.8}) == score


@pytest.mark.parametrize(("completion", "answer"), [
    ('Thought: done\nAction: answer[The Danube]', "The Danube"),
    ('<tool_call>\n{"name": "answer", "arguments": {"text": "Donau"}}\n</tool_call>', "Donau"),
    ("I think <answer>Danube River</answer>", "Danube River"),
    ([{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "answer", "arguments": '{"text": "danube"}'}}]}], "danube"),
    ('<tool_call>{"name": "search", "arguments": {"query": "Danube"}}</tool_call>', None),
    ("The answer is the Danube.", None),
])
def test_extract_answer(completion, answer):
    assert extract_answer(completion) == answer


def test_reward_uses_aliases_and_the_f1_threshold():
    assert answer_reward("Action: answer[Donau]", "The Danube", ["Donau"]) == 1.0
    assert answer_reward("Action: answer[Donau]", "The Danube", []) == 0.0
    assert answer_reward("Action: answer[Danube River basin]", "Danube River", [], 0.8) == 1.0  # f1 0.8
    assert answer_reward("Action: answer[Danube River basin]", "Danube River", [], 0.9) == 0.0
    assert answer_reward("no answer call", "Danube") == 0.0
    assert compute_score("hopforge", "Action: answer[Donau]", {"answer": "Danube", "aliases": ["Donau"]}) == 1.0
