from pathlib import Path

import pytest
from tests.filters.trajectory_builders import GOOD_ACTIONS, make_episode, question, write_dataset

from hopforge.storage.episodes import iter_episodes


@pytest.fixture
def out(tmp_path: Path) -> Path:  # (moved here from tests/filters/ without its conftest fixture)
    return tmp_path / "data"


def test_episodes_reassembled_across_shards_and_turnless_trajectories_kept(out):
    eps = [make_episode(GOOD_ACTIONS, tid=f"t{i}") for i in range(5)]
    empty = make_episode(GOOD_ACTIONS, tid="t-empty")
    empty.turns = []
    write_dataset(out, [question()], [*eps, empty], turns_per_shard=4)  # 9 turns each: every episode straddles
    got = {ep.trajectory_id: ep for ep in iter_episodes(out)}
    assert set(got) == {"t0", "t1", "t2", "t3", "t4", "t-empty"}
    assert [t["turn_index"] for t in got["t3"].turns] == list(range(9))
    assert got["t3"].turns[4]["tool_args"]["title"] == "Austria"
    assert got["t-empty"].turns == [] and got["t0"].question["answer"] == "The Danube"
    assert {ep.trajectory_id for ep in iter_episodes(out, skip={"t0", "t1"})} == {"t2", "t3", "t4", "t-empty"}
    assert [ep.trajectory_id for ep in iter_episodes(out, only={"t4"})] == ["t4"]


def test_calls_pair_observations_by_call_id():
    ep = make_episode(GOOD_ACTIONS)
    calls = ep.calls()
    assert [c.tool_name for c in calls] == ["search", "visit", "visit", "answer"]
    assert calls[1].observation["content"].startswith("Austria is a country")
    assert calls[3].observation is None and calls[1].key == ("visit", "austria#0")
