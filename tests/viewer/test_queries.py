"""The viewer's queries and the pure helpers behind the walk chain and the answer jump."""

from __future__ import annotations

import random

import pytest

from hopforge.errors import StorageError
from hopforge.storage import ShardWriter, open_catalog
from hopforge.viewer.queries import (
    QuestionFilter,
    answer_pattern,
    mark_answer,
    question_detail,
    question_page,
    trajectory_detail,
    walk_hops,
)


def test_walk_hops_pairs_each_page_with_the_evidence_into_it():
    ev = [{"hop": 1, "src": "A", "dst": "B", "anchor": "the bee", "sentence": "A cites The Bee twice."},
          {"hop": 2, "src": "B", "dst": "C", "anchor": "sea", "sentence": "B borders nothing."}]
    hops = walk_hops(["A", "B", "C"], ev)
    assert [h["title"] for h in hops] == ["A", "B", "C"]
    assert hops[0]["evidence"] is None
    assert hops[1]["parts"] == ("A cites ", "The Bee", " twice.")  # case-insensitive, original casing kept
    assert hops[2]["parts"] == ("B borders nothing.", "", "")  # anchor not in sentence: nothing marked


def test_answer_pattern_matches_whole_words_longest_alias_first():
    p = answer_pattern(["Paris", "Paris, France", None, "  "])
    assert [m.group(0) for m in p.finditer("Paris, France; not Parisian. PARIS.")] == ["Paris, France", "PARIS"]
    assert answer_pattern([None, ""]) is None


def test_mark_answer_counts_observations_only():
    turns = [{"turn_index": 0, "role": "user", "content": "Is it Lisbon?"},
             {"turn_index": 1, "role": "assistant", "content": "Maybe Lisbon."},
             {"turn_index": 2, "role": "tool", "content": "Porto is a city."},
             {"turn_index": 3, "role": "tool", "content": "The capital, lisbon, and Lisboa."}]
    assert mark_answer(turns, ["Lisbon", "Lisboa"]) == 3
    assert turns[1]["segments"] == [("Maybe Lisbon.", False)]
    assert turns[3]["segments"] == [("The capital, ", False), ("lisbon", True), (", and ", False),
                                    ("Lisboa", True), (".", False)]
    assert mark_answer(turns, ["Madrid"]) is None


def test_filter_values_are_bound_never_formatted():
    where, params = QuestionFilter(hops=2, text="x' OR '1'='1", reason="r'; DROP TABLE q; --").where()
    assert "x'" not in where and "DROP" not in where
    assert params == [2, "x' OR '1'='1", "x' OR '1'='1", "r'; DROP TABLE q; --", "r'; DROP TABLE q; --"]
    with pytest.raises(StorageError, match="unknown status filter 'nope'"):
        QuestionFilter(status="nope")


def test_as_query_keeps_only_set_filters():
    assert QuestionFilter(hops=3, status="all", text="").as_query() == {"hops": 3}
    assert QuestionFilter(status="kept", solve_min=0.0).as_query() == {"status": "kept", "solve_min": 0.0}


def test_page_details_are_fetched_for_the_page_only(small_run):
    with open_catalog(small_run) as con:
        page = question_page(con, QuestionFilter(), size=2)
        assert [r["question_id"] for r in page.rows] == ["q1", "q2"]
        assert (page.total, page.pages, page.first_row, page.last_row) == (3, 2, 1, 2)
        q1, q2 = page.rows
        assert (q1["n_trajectories"], q1["n_kept"], q1["max_turns"], q1["reasons"]) == (2, 1, 9, ["answer_mismatch"])
        assert (q2["n_kept"], q2["solve_rate_tools"], q2["reasons"]) == (0, 1.0, ["turn_limit_reached"])
        second = question_page(con, QuestionFilter(), page=2, size=2)
        assert [r["question_id"] for r in second.rows] == ["q3"] and (second.first_row, second.last_row) == (3, 3)
        empty = question_page(con, QuestionFilter(hops=9))
        assert empty.rows == [] and empty.total == 0 and empty.pages == 1 and empty.first_row == 0
        with pytest.raises(StorageError, match="page must be 1 or more"):
            question_page(con, QuestionFilter(), page=0)


def test_details_of_question_and_trajectory(small_run):
    with open_catalog(small_run) as con:
        q = question_detail(con, "q1")
        assert [t["trajectory_id"] for t in q["trajectories"]] == ["t1", "t3"]
        assert [t["kept"] for t in q["trajectories"]] == [True, False]
        assert q["trajectories"][1]["reasons"] == ["answer_mismatch"]
        assert question_detail(con, "missing") is None
        t = trajectory_detail(con, "t1")
        assert t["answer_turn"] == 5 and len(t["turns"]) == 9
        assert t["turns"][6]["loss_weight"] == 0.5 and t["turns"][6]["judge_label"] == "not_necessary"
        assert trajectory_detail(con, "missing") is None


def test_page_order_is_file_order_and_id_order_under_joins(tmp_path):
    """Pages must not reshuffle between requests: a semi-join loses file order, so it sorts by id."""
    rng = random.Random(3)
    order = list(range(6_000))
    rng.shuffle(order)  # file order differs from id order
    out = tmp_path / "data"
    with ShardWriter(out, "questions", run_id="r1", rows_per_shard=1_000) as w:
        w.write_many([{"question_id": f"q{i:08d}", "question": f"Q{i}?", "answer": f"A{i}", "hops": 2 + i % 4}
                      for i in order])
    kept_idx = sorted(i for i in range(6_000) if i % 7 == 0)
    with ShardWriter(out, "kept", run_id="f1") as w:
        w.write_many([{"trajectory_id": f"t{i}", "question_id": f"q{i:08d}"} for i in reversed(kept_idx)])
    with open_catalog(out) as con:
        hops3 = [i for i in order if 2 + i % 4 == 3]
        for page in (1, 7, 30):
            got = question_page(con, QuestionFilter(hops=3), page=page, size=50)
            assert [r["question_id"] for r in got.rows] == [f"q{i:08d}" for i in hops3[(page - 1) * 50:page * 50]]
        for _ in range(3):  # repeated: the failure this guards against was intermittent
            for page in (1, 2, 10):
                got = question_page(con, QuestionFilter(status="kept"), page=page, size=50)
                assert [r["question_id"] for r in got.rows] == [
                    f"q{i:08d}" for i in kept_idx[(page - 1) * 50:page * 50]]
                assert got.total == len(kept_idx)
        both = question_page(con, QuestionFilter(status="kept", hops=2), page=3, size=20)
        expected = [i for i in kept_idx if i % 4 == 0]
        assert [r["question_id"] for r in both.rows] == [f"q{i:08d}" for i in expected[40:60]]
