import pytest
from tests.filters.trajectory_builders import GOOD_ACTIONS, make_episode, question

from hopforge.errors import ConfigError
from hopforge.filters.dedup import DuplicateTrajectoryFilter, action_hash, near_duplicate_questions, shingles


def test_exact_duplicate_trajectory_by_action_sequence():
    f = DuplicateTrajectoryFilter()
    a, b = make_episode(tid="a"), make_episode(tid="b")
    # Same actions, different observation text and thoughts: still the same action sequence.
    b.turns[3]["content"] = "different observation"
    c = make_episode([("search", "other query", "x"), *GOOD_ACTIONS], tid="c")
    assert [f(e).keep for e in (a, b, c)] == [True, False, True]
    assert action_hash(a) == action_hash(b) != action_hash(c)
    assert f.stats.reasons == {"duplicate_trajectory": 1}


def test_duplicate_against_hash_kept_by_an_earlier_run():
    ep = make_episode(tid="new")
    d = DuplicateTrajectoryFilter({action_hash(make_episode(tid="old")): "old"})(ep)
    assert (d.keep, d.reason, d.detail) == (False, "duplicate_trajectory", "same actions as trajectory old")


def test_near_duplicate_questions_minhash():
    base = "Which river flows through the capital of the country where the famous violin maker Zorblax was born?"
    qs = [
        question("q2", question=base),
        question("q1", question=base.replace("famous", "celebrated")),  # one word changed
        question("q3", question="Who directed the film adapted from the novel by the author of Quux?"),
    ]
    dups = near_duplicate_questions(qs, threshold=0.7, num_perm=128)
    assert set(dups) == {"q2"}  # q1 sorts first and is kept; q2 duplicates it
    assert dups["q2"][0] == "near_duplicate_question" and "of question q1" in dups["q2"][1]
    # Priority (e.g. already has kept trajectories) decides which of the pair survives.
    assert set(near_duplicate_questions(qs, threshold=0.7, num_perm=128, priority={"q2"})) == {"q1"}
    assert near_duplicate_questions(qs, threshold=0.95, num_perm=128) == {}
    with pytest.raises(ConfigError, match="screen.minhash_threshold=0.99"):
        near_duplicate_questions(qs, threshold=0.99, num_perm=128)


def test_shingles_short_text():
    assert shingles("The Danube") == {b"danube"}
    assert shingles("the blue Danube river") == {b"blue danube", b"danube river"}
    assert shingles("") == set()
