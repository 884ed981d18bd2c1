import asyncio

import orjson
import pytest
from tests.filters.trajectory_builders import GOOD_ACTIONS, FakeTeacher, make_episode

from hopforge.errors import ModelOutputError
from hopforge.filters.correctness import AnswerFilter, parse_answer_verdict


def with_answer(text, **kw):
    return make_episode([*GOOD_ACTIONS[:-1], ("answer", text)], **kw)


def run(f, eps):
    asyncio.run(f.prepare(eps))
    return [f(ep) for ep in eps]


@pytest.mark.parametrize("answer", ["Danube", "the danube.", "  DANUBE!!", "Donau", "danube river", "Dánube"])
def test_answer_case_punctuation_alias_unicode_accepted(answer):
    ep = with_answer(answer)
    assert AnswerFilter(0.8)(ep).keep
    assert ep.notes["correctness"]["correct"] is True


def test_f1_threshold_and_mismatch_reason():
    ep = with_answer("the Danube delta region")  # f1 with "danube river" / "danube" is 0.4 / 0.5
    d = AnswerFilter(0.8)(ep)
    assert (d.keep, d.reason) == (False, "answer_mismatch")
    assert "best f1 0.50" in d.detail
    assert AnswerFilter(0.5)(with_answer("the Danube delta region")).keep
    assert AnswerFilter(0.8)(with_answer("")).reason == "empty_answer"


def test_question_missing():
    ep = make_episode()
    ep.question = None
    assert AnswerFilter(0.8)(ep).reason == "question_missing"


def test_llm_judge_rescues_near_miss_and_records_verdict():
    teacher = FakeTeacher(lambda p: orjson.dumps({"verdict": "correct", "rationale": "Donau is German for Danube."}).decode())
    f = AnswerFilter(0.8, judge=teacher)
    right, near, wrong_judged = with_answer("Danube", tid="a"), with_answer("Dunaj", tid="b"), with_answer("", tid="c")
    decisions = run(f, [right, near, wrong_judged])
    assert [d.keep for d in decisions] == [True, True, False]
    assert len(teacher.requests) == 1 and "Candidate answer: Dunaj" in teacher.requests[0]  # only the near miss
    assert near.notes["correctness"] == {"correct": True, "f1": 0.0, "judge_verdict": "correct",
                                         "judge_rationale": "Donau is German for Danube."}


def test_llm_judge_incorrect_and_malformed_never_accept():
    f = AnswerFilter(0.8, judge=FakeTeacher(lambda p: '{"verdict": "incorrect", "rationale": "A different river."}'))
    [d] = run(f, [with_answer("Rhine")])
    assert d.reason == "answer_mismatch" and "judge incorrect: A different river." in d.detail
    f = AnswerFilter(0.8, judge=FakeTeacher(lambda p: "Sure! The answer is correct."))
    ep = with_answer("Rhine")
    [d] = run(f, [ep])
    assert d.reason == "answer_mismatch" and "judge malformed" in d.detail
    assert ep.notes["correctness"]["judge_verdict"] == "malformed"


def test_parse_answer_verdict_strict():
    assert parse_answer_verdict('```json\n{"verdict": "correct", "rationale": "same"}\n```').verdict == "correct"
    for bad in ('{"verdict": "maybe", "rationale": "x"}', '{"verdict": "correct"}', "correct", "[]"):
        with pytest.raises(ModelOutputError):
            parse_answer_verdict(bad)
