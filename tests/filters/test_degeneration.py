from tests.filters.trajectory_builders import GOOD_ACTIONS, make_episode

from hopforge.filters.degeneration import DegenerationFilter, repeated_ngram_fraction

ANSWER = [("answer", "Danube")]


def decide(actions):
    return DegenerationFilter()(make_episode(actions))


def test_good_trajectory_passes():
    assert decide(GOOD_ACTIONS).keep


def test_loop_of_three_identical_searches():
    s = ("search", "Zorblax violin", "no results")
    assert decide([s, s, *ANSWER]).keep  # two identical searches are tolerated
    d = decide([s, ("search", "  zorblax   VIOLIN ", "no results"), s, *ANSWER])  # normalised query
    assert (d.keep, d.reason) == (False, "repeated_call_loop")


def test_page_ping_pong_and_revisits():
    a, b = ("visit", "Austria", "A."), ("visit", "Vienna", "V.")
    d = decide([a, b, a, b, *ANSWER])
    assert (d.keep, d.reason) == (False, "page_loop") and "ping-pong" in d.detail
    d = DegenerationFilter(max_identical_calls=5)(make_episode([a, ("search", "x", "y"), a, b, a, *ANSWER]))
    assert d.reason == "page_loop" and "x3" in d.detail


def test_repeated_and_repetitive_text_and_empty_turn():
    say = ("say", "I should search for the violin maker again.")
    d = decide([say, say, say, *GOOD_ACTIONS])
    assert d.reason == "repeated_text"
    short = ("say", "Searching now.")  # short stock phrases repeat legitimately
    assert decide([short, short, short, *GOOD_ACTIONS]).keep
    babble = ("say", "the river flows and " * 40)
    assert decide([babble, *GOOD_ACTIONS]).reason == "repetitive_text"
    assert decide([("say", ""), *GOOD_ACTIONS]).reason == "empty_turn"


def test_repeated_ngram_fraction():
    assert repeated_ngram_fraction("a b c d e f g h i j") == 0.0
    assert repeated_ngram_fraction("x " * 100) > 0.9
