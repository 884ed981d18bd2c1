from pathlib import Path

import pytest
from tests.filters.trajectory_builders import GOOD_ACTIONS, make_episode, question, write_dataset

from hopforge.config import load_config
from hopforge.storage.episodes import iter_episodes, load_questions


@pytest.fixture
def out(tmp_path: Path) -> Path:  # (moved here from tests/filters/ without its conftest fixture)
    return tmp_path / "data"


def cfg_for(out: Path, **over):
    return load_config(None, {"run.out": str(out), **over})


def test_episodes_reassembled_across_shards_and_turnless_trajectories_kept(out):
    eps = [make_episode(GOOD_ACTIONS, tid=f"t{i}") for i in range(5)]
    empty = make_episode(GOOD_ACTIONS, tid="t-empty")
    empty.turns = []
    runs = write_dataset(cfg_for(out), [question()], [*eps, empty], turns_per_shard=4)  # 9 turns each: all straddle
    rollouts, questions = runs["rollouts"].fingerprint, runs["questions"].fingerprint
    assert len(list((out / "turns" / f"run={rollouts}").glob("part-*.parquet"))) == 12  # 45 turns / 4
    got = {ep.trajectory_id: ep for ep in iter_episodes(out, run=rollouts, question_run=questions)}
    assert set(got) == {"t0", "t1", "t2", "t3", "t4", "t-empty"}
    assert [t["turn_index"] for t in got["t3"].turns] == list(range(9))
    assert got["t3"].turns[4]["tool_args"]["title"] == "Austria"
    assert got["t-empty"].turns == [] and got["t0"].question["answer"] == "The Danube"
    assert {ep.trajectory_id for ep in iter_episodes(out, run=rollouts, skip={"t0", "t1"})} == \
        {"t2", "t3", "t4", "t-empty"}
    assert [ep.trajectory_id for ep in iter_episodes(out, run=rollouts, only={"t4"})] == ["t4"]


def test_episodes_of_one_rollout_run_and_one_batch(out):
    a = write_dataset(cfg_for(out), [question()], [make_episode(GOOD_ACTIONS, tid="a")])
    b = write_dataset(cfg_for(out, **{"run.run_id": "b"}), [question(question="Another question?")],
                      [make_episode(GOOD_ACTIONS, tid="b")])
    ra, rb = a["rollouts"].fingerprint, b["rollouts"].fingerprint
    assert [ep.trajectory_id for ep in iter_episodes(out, run=ra)] == ["a"]
    assert [ep.trajectory_id for ep in iter_episodes(out, run=rb)] == ["b"]
    assert sorted(ep.trajectory_id for ep in iter_episodes(out)) == ["a", "b"]  # no run: every partition
    # The question comes from the named partition of questions.
    [ep] = iter_episodes(out, run=rb, question_run=b["questions"].fingerprint)
    assert ep.question["question"] == "Another question?"
    assert load_questions(out, a["questions"].fingerprint)["q1"]["question"] == question()["question"]
    assert [ep.trajectory_id for ep in iter_episodes(out, run=ra, batch="fixture")] == ["a"]
    assert list(iter_episodes(out, run=ra, batch="another-batch")) == []


def test_calls_pair_observations_by_call_id():
    ep = make_episode(GOOD_ACTIONS)
    calls = ep.calls()
    assert [c.tool_name for c in calls] == ["search", "visit", "visit", "answer"]
    assert calls[1].observation["content"].startswith("Austria is a country")
    assert calls[3].observation is None and calls[1].key == ("visit", "austria#0")
