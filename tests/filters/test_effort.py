from tests.filters.trajectory_builders import GOOD_ACTIONS, make_episode

from hopforge.filters.effort import EffortFilter


def test_min_tool_calls_excludes_the_answer_call():
    assert EffortFilter(3, 10_000)(make_episode()).keep  # 3 search/visit + answer
    d = EffortFilter(4, 10_000)(make_episode())
    assert (d.keep, d.reason) == (False, "too_few_tool_calls")
    assert "3 search/visit calls < 4" in d.detail


def test_max_tokens():
    ep = make_episode(GOOD_ACTIONS, tokens_in=9000, tokens_out=1001)
    d = EffortFilter(0, 10_000)(ep)
    assert (d.keep, d.reason) == (False, "too_many_tokens")
    assert EffortFilter(0, 10_001)(ep).keep
