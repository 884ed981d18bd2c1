import pytest
from tests.filters.trajectory_builders import GOOD_ACTIONS, make_episode

from hopforge.filters.format import FormatFilter


def decide(ep):
    # Strict (no masking): every bad call rejects, with the reason that names it. Masking of
    # recovered calls is tested in test_format_masking.py.
    return FormatFilter(max_masked_calls=0, max_masked_share=0.0)(ep)


def test_good_trajectory_passes():
    assert decide(make_episode()).keep


@pytest.mark.parametrize(
    ("actions", "reason"),
    [
        ([("bad", "<tool_call>{search", "unterminated JSON"), *GOOD_ACTIONS], "unparseable_call"),
        ([("call", "browse", {"query": "x"}), *GOOD_ACTIONS], "unknown_tool"),
        ([("call", "search", {"query": "  "}), *GOOD_ACTIONS], "invalid_tool_args"),
        ([("call", "search", {"query": "x", "k": 0}), *GOOD_ACTIONS], "invalid_tool_args"),
        ([("call", "visit", {"query": "x"}), *GOOD_ACTIONS], "invalid_tool_args"),
        ([*GOOD_ACTIONS, ("say", "one more thing")], "turns_after_answer"),
    ],
)
def test_format_rejections(actions, reason):
    d = decide(make_episode(actions))
    assert (d.keep, d.reason) == (False, reason)


def test_no_answer_and_bad_status():
    d = decide(make_episode(GOOD_ACTIONS[:-1]))  # the builder sets status turn_limit without an answer
    assert d.reason == "status_turn_limit"
    d = decide(make_episode(GOOD_ACTIONS[:-1], status="answered"))
    assert d.reason == "no_final_answer"
    ep = make_episode()
    ep.turns = []
    assert decide(ep).reason == "no_turns"
