"""The label stage (src/hopforge/labels/stage.py): turn labels for the kept trajectories of one
filter run, rule or judge labels, batches that follow the rollout batches, and the catalog's
``turns`` view joining the labels of the chain it reads."""

from pathlib import Path

import orjson
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
from hopforge.filters import run_filters
from hopforge.labels.stage import LabelStage, LabelStats, run_labels
from hopforge.stage import resolve, selection_for
from hopforge.storage import query_arrow, read_table
from hopforge.testing.stages import complete_chain


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "data"


def cfg_for(out: Path, **overrides):
    return load_config(None, {"run.out": str(out), **overrides})


def filtered(out: Path, **overrides):
    """The filter test's nine trajectories, filtered (kept: good, alias, other-q)."""
    cfg = cfg_for(out, **overrides)
    write_dataset(cfg, [question(), Q2], funnel_episodes(), turns_per_shard=25)
    run_filters(cfg)
    return cfg


def judge_reply(label: str):
    def reply(prompt: str) -> str:
        line = prompt.rsplit("Label every assistant turn among ", 1)[1].split(":", 1)[0]
        return orjson.dumps([{"turn": int(t.strip()[1:]), "label": label, "rationale": label}
                             for t in line.split(",")]).decode()

    return reply


def test_rule_labels_for_the_kept_trajectories_and_the_turns_view(out):
    cfg = filtered(out)
    stats = run_labels(cfg)
    assert isinstance(stats, LabelStats)
    assert stats.trajectories == 3 and stats.assistant_turns == 12 and stats.turns == 27
    assert stats.assistant_turn_policies == {"rules-v1": 12} and stats.judge_labels == {"none": 12}
    assert stats.rows == {"turn_labels": 27} and stats.judge_requests == 0
    labels = read_table(out, "turn_labels", run=resolve(cfg, "labels").fingerprint).to_pylist()
    assert {r["trajectory_id"] for r in labels} == {"good", "alias", "other-q"}
    # The catalog's turns view joins the chain's labels: loss_weight is queryable beside the turn text.
    sel = selection_for(resolve(cfg, "labels"))
    rows = query_arrow(out, "SELECT role, sum(loss_weight) AS w FROM turns WHERE trajectory_id = 'good' "
                            "GROUP BY role ORDER BY role", selection=sel).to_pylist()
    assert rows == [{"role": "assistant", "w": 4.0}, {"role": "system", "w": 0.0}, {"role": "tool", "w": 0.0},
                    {"role": "user", "w": 0.0}]
    again = run_labels(cfg)
    assert again.batches == again.batches_skipped == 1 and (again.trajectories, again.rows) == (0, {})
    assert read_table(out, "turn_labels").num_rows == 27


def test_judge_labels_one_request_per_window(out):
    cfg = filtered(out, **{"labels.judge": True, "labels.judge_window": 3})
    teacher = FakeTeacher(judge_reply("essential"))
    stats = run_labels(cfg, judge=teacher)
    assert stats.judge_requests == len(teacher.requests) == 6  # 3 trajectories x ceil(4 / 3) windows
    assert stats.judge_labels == {"essential": 12} and stats.judge_fallback_windows == 0
    assert stats.assistant_turn_policies == {"judge-v1": 12} and stats.mean_assistant_loss_weight == 1.0


def test_another_label_config_labels_again_and_each_chain_sees_its_own_labels(out):
    rules = filtered(out)
    run_labels(rules)
    judged = cfg_for(out, **{"labels.judge": True})
    assert resolve(judged, "labels").fingerprint != resolve(rules, "labels").fingerprint
    assert resolve(judged, "filters").fingerprint == resolve(rules, "filters").fingerprint  # nothing re-filtered
    stats = run_labels(judged, judge=FakeTeacher(judge_reply("harmful")))
    assert stats.trajectories == 3 and stats.batches_skipped == 0
    sql = ("SELECT DISTINCT label_policy, loss_weight FROM turns WHERE trajectory_id = 'good' "
           "AND role = 'assistant' ORDER BY loss_weight")
    assert query_arrow(out, sql, selection=selection_for(resolve(judged, "labels"))).to_pylist() == \
        [{"label_policy": "judge-v1", "loss_weight": 0.0}]
    assert query_arrow(out, sql, selection=selection_for(resolve(rules, "labels"))).to_pylist() == \
        [{"label_policy": "rules-v1", "loss_weight": 1.0}]
    # Without a selection the view shows the most recent labelling run.
    assert query_arrow(out, sql).to_pylist() == [{"label_policy": "judge-v1", "loss_weight": 0.0}]


def test_label_batches_follow_rollout_batches(out):
    cfg = cfg_for(out)
    rollouts = resolve(cfg, "rollouts")
    a = make_episode(GOOD_ACTIONS, tid="a")
    b = make_episode([("search", "Zorblax", "Zorblax: Austria."), *GOOD_ACTIONS], tid="b")
    for ep, batch in ((a, "rollout-b1"), (b, "rollout-b2")):  # as two rollout batches commit them
        rollouts.commit({"trajectories": [ep.trajectory], "turns": ep.turns}, batch)
    complete_chain(cfg, {"questions": {"questions": [question()]}, "rollouts": {}})
    run_filters(cfg)
    labels = resolve(cfg, "labels")
    plan = LabelStage().plan(labels)
    assert [(p.id, p.payload) for p in plan] == [("labels-rollout-b1", "rollout-b1"), ("labels-rollout-b2", "rollout-b2")]
    stats = run_labels(cfg)
    assert stats.batches == 2 and stats.trajectories == 2
    for p, tid in zip(plan, ("a", "b"), strict=True):  # each batch labelled only its rollout batch's trajectories
        got = read_table(out, "turn_labels", run=labels.fingerprint, batch=p.id, columns=["trajectory_id"])
        assert set(got.column(0).to_pylist()) == {tid}
    # A batch that committed but died before its marker is recognised from the manifest, not redone.
    (labels.dir / "complete.json").unlink()
    (labels.dir / "done" / f"{plan[1].id}.json").unlink()
    again = run_labels(cfg)
    assert again.batches == again.batches_skipped == 2 and again.trajectories == 0
    assert read_table(out, "turn_labels").num_rows == 9 + 11
