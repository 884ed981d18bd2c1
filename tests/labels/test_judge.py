import asyncio

import orjson
import pytest
from tests.filters.trajectory_builders import GOOD_ACTIONS, FakeTeacher, make_episode

from hopforge.errors import ModelOutputError, TeacherError
from hopforge.labels.judge import TurnJudge, judge_prompt, parse_judge_output, windows
from hopforge.labels.rules import RULES_POLICY

LONG = [("search", f"query {i}", f"result {i}") for i in range(6)] + [("answer", "Danube")]


def requested_turns(prompt: str) -> list[int]:
    line = prompt.rsplit("Label every assistant turn among ", 1)[1].split(":", 1)[0]
    return [int(x.strip()[1:]) for x in line.split(",")]


def good_reply(prompt: str) -> str:
    turns = requested_turns(prompt)
    return orjson.dumps([{"turn": t, "label": "essential" if t % 4 == 0 else "not_necessary",
                          "rationale": f"turn {t} reason"} for t in turns]).decode()


def test_one_request_per_window_and_weights():
    ep = make_episode(LONG)  # 7 assistant turns: 2, 4, ..., 14
    assert windows(ep, 3) == [[2, 4, 6], [8, 10, 12], [14]]
    teacher = FakeTeacher(good_reply)
    judge = TurnJudge(teacher, window=3)
    rows = {r["turn_index"]: r for r in asyncio.run(judge.label(ep))}
    assert judge.requests == len(teacher.requests) == 3  # not 7
    assert [requested_turns(p) for p in teacher.requests] == [[2, 4, 6], [8, 10, 12], [14]]
    assert rows[4]["judge_label"] == "essential" and rows[4]["loss_weight"] == 1.0
    assert rows[6]["judge_label"] == "not_necessary" and rows[6]["loss_weight"] == 0.0
    assert rows[3]["judge_label"] is None and rows[3]["loss_weight"] == 0.0  # observations never train
    assert rows[6]["judge_rationale"] == "turn 6 reason" and rows[6]["label_policy"] == "judge-v1"
    assert rows[6]["novel_query"] is True  # rule labels are kept beside the judge's


def test_not_necessary_down_weighted_policy_name():
    judge = TurnJudge(FakeTeacher(good_reply), window=20, not_necessary_weight=0.25)
    rows = {r["turn_index"]: r for r in asyncio.run(judge.label(make_episode(LONG)))}
    assert rows[6]["loss_weight"] == 0.25 and rows[6]["label_policy"] == "judge-v1:not_necessary=0.25"


def test_malformed_window_falls_back_to_rules_and_says_so():
    def reply(prompt):
        turns = requested_turns(prompt)
        if turns[0] == 2:
            return "Turn 2 is essential, turn 4 is fine."  # prose, not JSON
        return good_reply(prompt)

    judge = TurnJudge(FakeTeacher(reply), window=3)
    rows = {r["turn_index"]: r for r in asyncio.run(judge.label(make_episode(LONG)))}
    assert judge.fallback_windows == 1
    for t in (2, 4, 6):
        assert rows[t]["judge_label"] is None and rows[t]["label_policy"] == RULES_POLICY
        assert rows[t]["judge_rationale"].startswith("judge_fallback: ModelOutputError")
        assert rows[t]["loss_weight"] == 1.0  # rules-v1: valid, novel, new information
    assert rows[8]["judge_label"] == "essential"


def test_dead_teacher_stops_instead_of_silently_rule_labelling():
    def dead(prompt):
        raise TeacherError("teacher unreachable (gave up after 4 retries)")

    with pytest.raises(TeacherError):
        asyncio.run(TurnJudge(FakeTeacher(dead), window=20).label(make_episode()))


def test_unexpected_client_error_falls_back():
    def boom(prompt):
        raise ConnectionError("teacher down")

    rows = asyncio.run(TurnJudge(FakeTeacher(boom), window=20).label(make_episode()))
    assert {r["judge_rationale"] for r in rows if r["turn_index"] in (2, 4, 6, 8)} == {
        "judge_fallback: ConnectionError: teacher down"}


@pytest.mark.parametrize("reply", [
    '[{"turn": 2, "label": "essential", "rationale": "x"}]',  # missing turn 4
    '[{"turn": 2, "label": "essential", "rationale": "x"}, {"turn": 4, "label": "great", "rationale": "y"}]',
    '[{"turn": 2, "label": "essential", "rationale": ""}, {"turn": 4, "label": "harmful", "rationale": "y"}]',
    '[{"turn": 2, "label": "essential", "rationale": "x"}, {"turn": 2, "label": "harmful", "rationale": "y"}]',
    '[{"turn": 2, "label": "essential", "rationale": "x", "score": 1}, {"turn": 4, "label": "harmful", "rationale": "y"}]',
    '{"turn": 2}',
    '[{"turn": "2", "label": "essential", "rationale": "x"}, {"turn": 4, "label": "harmful", "rationale": "y"}]',
])
def test_parse_judge_output_is_strict(reply):
    with pytest.raises(ModelOutputError):
        parse_judge_output(reply, [2, 4])


def test_parse_judge_output_accepts_fenced_json_and_prompt_shows_window():
    got = parse_judge_output('```json\n[{"turn": 2, "label": "harmful", "rationale": "wrong\\n page"}]\n```', [2])
    assert got == {2: ("harmful", "wrong page")}
    prompt = judge_prompt(make_episode(GOOD_ACTIONS), [2, 4])
    assert "T3 [tool] 1. Zorblax" in prompt and "T5 [tool]" in prompt and "T6" not in prompt
    assert "Zorblax -> Austria -> Vienna -> Danube" in prompt


def test_prompt_cuts_context_before_the_window():
    long_obs = "Vienna lies on the Danube. " * 40  # ~1,000 characters
    ep = make_episode([("search", f"query {i}", f"{i} {long_obs}") for i in range(6)] + [("answer", "Danube")])
    prompt = judge_prompt(ep, [10, 12], context_turns=4)
    transcript = prompt.split("Transcript (T<n> = turn n; long turns are cut):\n", 1)[1].split("\n\nLabel", 1)[0]
    lines = transcript.splitlines()
    assert lines[0] == "(… 5 earlier turns omitted)"  # user + T2..T9 = 9 turns before T10, 4 kept
    assert [ln.split(" ", 1)[0] for ln in lines[1:]] == ["T6", "T7", "T8", "T9", "T10", "T11", "T12", "T13"]
    assert max(len(ln) for ln in lines[1:5]) <= len("T9 [tool] ") + 120
    assert len(lines[6]) > 300  # the window's own observations keep 400 characters
