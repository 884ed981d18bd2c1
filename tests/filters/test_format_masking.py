"""Masking recoverable errors (src/hopforge/filters/format.py, labels): a trajectory whose bad calls
were each followed by a valid call is kept, up to the cap in ``[filters]``, and the label stage
gives every bad call and its error observation loss_weight 0 (under the rule and the judge policy);
beyond the cap, or unrecovered, it is rejected with the reason of its first bad call."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from tests.filters.trajectory_builders import GOOD_ACTIONS, FakeTeacher, make_episode, question, write_dataset

from hopforge.config import load_config
from hopforge.filters import run_filters
from hopforge.filters.format import FormatFilter
from hopforge.labels.stage import run_labels
from hopforge.stage import resolve
from hopforge.storage import read_table
from hopforge.storage.episodes import Episode

BAD = ("bad", "Action: serch[[unterminated", "no action line")
SEARCHES = [("search", f"query {i}", f"result {i}: Zorblax was a violin maker born in Austria.") for i in range(6)]


def with_error_observations(ep: Episode) -> Episode:
    """Give every unparsed assistant turn the error observation the rollout engine sends back."""
    turns = []
    for t in ep.turns:
        turns.append(t)
        if t["role"] == "assistant" and t.get("parse_error"):
            msg = f"Error: {t['parse_error']}. Call exactly one tool: search, visit or answer."
            turns.append({**t, "role": "user", "content": msg, "raw_output": None, "parse_error": None,
                          "error": msg, "tool_call_id": None, "tool_name": None})
    for i, t in enumerate(turns):
        t["turn_index"] = i
    ep.turns = turns
    ep.notes.clear()
    return ep


def episode(actions, tid="t1") -> Episode:
    return with_error_observations(make_episode(actions, tid=tid))


def test_a_recovered_bad_call_of_each_kind_is_kept_and_noted_as_masked():
    for bad in (BAD, ("call", "browse", {"query": "x"}), ("call", "search", {"query": "  "}),
                ("fail", "search", "Zorblax", "index unavailable")):
        ep = episode([bad, *GOOD_ACTIONS])
        d = FormatFilter()(ep)
        assert d.keep, (bad, d)
        assert ep.notes["masked_calls"] == [2], bad  # the bad call is the first assistant turn


def test_the_cap_on_masked_calls_by_count_and_by_share():
    # 3 bad calls among 6 searches + 4 good calls: at the count cap (3) and under the share (3/13): kept.
    ok = episode([BAD, *SEARCHES[:3], BAD, *SEARCHES[3:], BAD, *GOOD_ACTIONS])
    assert FormatFilter(max_masked_calls=3, max_masked_share=0.25)(ok).keep
    # A 4th bad call is beyond the count cap: rejected with the first bad call's reason, as without masking.
    over = episode([BAD, *SEARCHES[:3], BAD, *SEARCHES[3:], BAD, BAD, *GOOD_ACTIONS])
    d = FormatFilter(max_masked_calls=3, max_masked_share=0.5)(over)
    assert (d.keep, d.reason) == (False, "unparseable_call")
    assert d.detail.startswith("turn 2: no action line") and "4 bad calls of 14" in d.detail
    # By share: 1 bad call of 3 calls is over 25 %, 1 of 4 is not.
    short = episode([BAD, ("search", "Zorblax", "x"), ("answer", "Danube")])
    d = FormatFilter(max_masked_calls=3, max_masked_share=0.25)(short)
    assert (d.keep, d.reason) == (False, "unparseable_call") and "1 bad calls of 3" in d.detail
    assert FormatFilter(max_masked_calls=3, max_masked_share=0.25)(episode([BAD, *GOOD_ACTIONS[1:]])).keep
    # Both caps at 0: the strict filter of before.
    d = FormatFilter(max_masked_calls=0, max_masked_share=0.0)(episode([BAD, *GOOD_ACTIONS]))
    assert (d.keep, d.reason) == (False, "unparseable_call")


def test_a_bad_call_never_recovered_is_rejected():
    # The answer recovers everything before it; a bad call after the answer is never recovered.
    ep = episode([*GOOD_ACTIONS, BAD])
    ep.trajectory["status"] = "answered"
    d = FormatFilter()(ep)
    assert (d.keep, d.reason) == (False, "unparseable_call") and "not recovered" in d.detail
    # A trajectory that ends in errors never answered: rejected by its status, as before.
    d = FormatFilter()(episode([*GOOD_ACTIONS[:-1], BAD, BAD]))
    assert (d.keep, d.reason) == (False, "status_turn_limit")


@pytest.fixture
def recovered(out: Path):
    """Two trajectories of one question: clean, and with one recovered garbage turn."""
    def make(**overrides):
        cfg = load_config(None, {"run.out": str(out), **overrides})
        eps = [make_episode(GOOD_ACTIONS, tid="clean"), episode([BAD, *GOOD_ACTIONS], tid="recovered")]
        write_dataset(cfg, [question()], eps)
        return cfg
    return make


def test_the_stage_keeps_the_recovered_trajectory_and_the_labels_mask_the_bad_turn(recovered):
    cfg = recovered()
    stats = run_filters(cfg)
    assert stats.kept == 2 and stats.rejected == 0
    run_labels(cfg)
    labels = {r["turn_index"]: r for r in read_table(cfg.run.out, "turn_labels", run=resolve(cfg, "labels").fingerprint)
              .to_pylist() if r["trajectory_id"] == "recovered"}
    # turn 2: the garbage call, turn 3: its error observation, turn 4: the recovery.
    assert labels[2]["loss_weight"] == 0 and labels[2]["valid_call"] is False and labels[2]["tool_error"] is True
    assert labels[3]["loss_weight"] == 0 and labels[3]["tool_error"] is True
    assert labels[4]["recovery"] is True and labels[4]["loss_weight"] == 1


def test_the_judge_cannot_give_a_masked_call_weight(recovered):
    cfg = recovered(**{"labels.judge": True})
    run_filters(cfg)

    def everything_essential(prompt: str) -> str:
        line = prompt.rsplit("Label every assistant turn among ", 1)[1].split(":", 1)[0]
        return orjson.dumps([{"turn": int(t.strip()[1:]), "label": "essential", "rationale": "needed"}
                             for t in line.split(",")]).decode()

    run_labels(cfg, judge=FakeTeacher(everything_essential))
    labels = {r["turn_index"]: r for r in read_table(cfg.run.out, "turn_labels", run=resolve(cfg, "labels").fingerprint)
              .to_pylist() if r["trajectory_id"] == "recovered"}
    assert labels[2]["judge_label"] == "essential" and labels[2]["loss_weight"] == 0
    assert labels[4]["judge_label"] == "essential" and labels[4]["loss_weight"] == 1


def test_the_cap_in_the_config_restores_the_strict_filter(recovered):
    cfg = recovered(**{"filters.max_masked_calls": 0})
    stats = run_filters(cfg)
    assert stats.kept == 1 and stats.rejects == {"unparseable_call": 1}
