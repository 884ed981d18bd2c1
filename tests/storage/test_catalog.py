from __future__ import annotations

import random

import polars as pl
import pyarrow as pa
import pytest

from hopforge.errors import SQLGuardError
from hopforge.storage import (
    ShardWriter,
    guard_sql,
    open_catalog,
    query_arrow,
    scan,
    write_shard,
)
from hopforge.storage.schemas import schema_for


@pytest.fixture
def out(tmp_path):
    with ShardWriter(tmp_path, "questions", run_id="r1") as w:
        for i, hops in enumerate([2, 2, 3]):
            w.write({"question_id": f"q{i}", "question": f"Which entity {i}?", "answer": f"A{i}",
                     "path": ["Start", "Middle", f"A{i}"], "hops": hops})
    with ShardWriter(tmp_path, "turns", run_id="r1") as w:
        for i, role in enumerate(["user", "assistant", "tool", "assistant"]):
            w.write({"trajectory_id": "t1", "question_id": "q0", "turn_index": i, "role": role})
    with ShardWriter(tmp_path, "turn_labels", run_id="old") as w:
        w.write({"trajectory_id": "t1", "turn_index": 1, "loss_weight": 0.5, "label_policy": "old"})
    with ShardWriter(tmp_path, "turn_labels", run_id="new") as w:
        w.write_many([{"trajectory_id": "t1", "turn_index": i, "loss_weight": w_, "label_policy": "new"}
                      for i, w_ in [(0, 0.0), (1, 1.0), (2, 0.0), (3, 0.0)]])
    return tmp_path


def test_views_query_in_place_with_hive_run_column(out):
    rows = query_arrow(out, "SELECT hops, count(*) AS n FROM questions GROUP BY hops ORDER BY hops").to_pylist()
    assert rows == [{"hops": 2, "n": 2}, {"hops": 3, "n": 1}]
    assert query_arrow(out, "SELECT DISTINCT run FROM questions").to_pylist() == [{"run": "r1"}]
    assert query_arrow(out, "SELECT path[3] AS answer_title FROM questions WHERE question_id='q2'").to_pylist() == [
        {"answer_title": "A2"}]


def test_turns_view_joins_labels_of_latest_labelling_run(out):
    rows = query_arrow(out, "SELECT turn_index, role, loss_weight, label_policy FROM turns ORDER BY 1").to_pylist()
    assert [r["loss_weight"] for r in rows] == [0.0, 1.0, 0.0, 0.0]
    assert {r["label_policy"] for r in rows} == {"new"}
    lf = scan("turns", out).sort("turn_index").collect()
    assert lf["loss_weight"].to_list() == [0.0, 1.0, 0.0, 0.0]


def test_empty_tables_have_typed_views(out):
    assert query_arrow(out, "SELECT count(*) AS n FROM trajectories").to_pylist() == [{"n": 0}]
    assert "final_answer" in query_arrow(out, "SELECT * FROM trajectories").column_names


def test_polars_scan_is_lazy_and_reads_the_same_rows(out):
    lf = scan("questions", out)
    assert isinstance(lf, pl.LazyFrame)
    assert lf.filter(pl.col("hops") == 2).select(pl.len()).collect().item() == 2


@pytest.mark.parametrize("sql", [
    "COPY questions TO '/tmp/leak.csv'",
    "ATTACH '/tmp/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE TABLE x AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "INSERT INTO questions (question) VALUES ('x')",
    "DELETE FROM questions",
    "UPDATE questions SET answer = 'x'",
    "DROP VIEW questions",
    "SELECT 1; DROP VIEW questions",
    "SELECT 1; COPY questions TO '/tmp/x.csv'",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "EXPORT DATABASE '/tmp/x'",
    "CALL pragma_version()",
    "DETACH x",
])
def test_guard_refuses_statements_that_write_attach_install_or_copy(sql):
    with pytest.raises(SQLGuardError):
        guard_sql(sql)


def test_guard_allows_read_only_forms():
    for sql in ["SELECT 1", "WITH a AS (SELECT 1 AS x) SELECT * FROM a", "FROM questions", "DESCRIBE questions",
                "SUMMARIZE questions", "EXPLAIN SELECT 1", "SHOW TABLES"]:
        assert guard_sql(sql) == sql


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
])
def test_select_cannot_read_outside_the_data_dir_or_reach_the_network(out, sql):
    with pytest.raises(SQLGuardError, match="refused"):
        query_arrow(out, sql)


def test_select_can_read_parquet_inside_the_data_dir(out):
    glob = str(out.resolve() / "questions" / "run=*" / "part-*.parquet")
    assert query_arrow(out, f"SELECT count(*) AS n FROM read_parquet('{glob}')").to_pylist() == [{"n": 3}]


def test_bad_sql_is_a_clear_error(out):
    with pytest.raises(SQLGuardError, match="does not parse"):
        guard_sql("SELEC nothing")


def _questions(out, run: str, rows: list[tuple[str, str]]) -> None:
    write_shard(out, "questions", pa.Table.from_pylist(
        [{"question_id": q, "question": f"{q}?", "answer": a, "hops": 2} for q, a in rows],
        schema=schema_for("questions")), run_id=run)


def test_a_selection_names_the_partitions_each_view_reads_and_table_all_reads_every_one(tmp_path):
    _questions(tmp_path, "questions-a", [("q0", "a0"), ("q1", "a1")])
    _questions(tmp_path, "questions-b", [("q1", "b1"), ("q2", "b2")])
    write_shard(tmp_path, "kept", pa.Table.from_pylist([{"trajectory_id": "t1", "question_id": "q1"}],
                                                       schema=schema_for("kept")), run_id="filters-x")
    sel = {"questions": ["questions-b"]}  # kept is not selected: its view is empty, typed
    sql = "SELECT question_id, answer, run FROM questions ORDER BY 1"
    assert query_arrow(tmp_path, sql, selection=sel).to_pylist() == [
        {"question_id": "q1", "answer": "b1", "run": "questions-b"},
        {"question_id": "q2", "answer": "b2", "run": "questions-b"}]
    assert query_arrow(tmp_path, "SELECT count(*) AS n, count(correct) AS c FROM kept", selection=sel).to_pylist() \
        == [{"n": 0, "c": 0}]
    # <table>_all: every partition; the same id in two partitions is two rows (dedup is within a partition)
    all_rows = query_arrow(tmp_path, "SELECT question_id, run FROM questions_all ORDER BY 2, 1", selection=sel)
    assert [(r["question_id"], r["run"]) for r in all_rows.to_pylist()] == [
        ("q0", "questions-a"), ("q1", "questions-a"), ("q1", "questions-b"), ("q2", "questions-b")]
    assert query_arrow(tmp_path, "SELECT count(*) AS n FROM kept_all", selection=sel).to_pylist() == [{"n": 1}]
    # no selection: <table> reads every partition too
    assert query_arrow(tmp_path, "SELECT count(*) AS n FROM questions").to_pylist() == [{"n": 4}]
    assert sorted(scan("questions", tmp_path, selection=sel).collect()["answer"].to_list()) == ["b1", "b2"]


def test_an_id_written_twice_in_a_partition_shows_once_first_copy_and_file_order_kept(tmp_path):
    rng = random.Random(5)
    ids = [f"q{i:05d}" for i in range(3_000)]
    rng.shuffle(ids)  # file order differs from id order
    _questions(tmp_path, "r", [(q, "first") for q in ids[:2_000]])
    # a second writer (the leases failed) wrote 500 of the same ids again, and 1,000 new ones
    again = ids[100:600] + ids[2_000:]
    _questions(tmp_path, "r", [(q, "second") for q in again])
    expected = [(q, "first") for q in ids[:2_000]] + [(q, "second") for q in ids[2_000:]]
    for view in ("questions", "questions_all"):
        got = query_arrow(tmp_path, f"SELECT question_id, answer FROM {view}").to_pylist()
        assert [(r["question_id"], r["answer"]) for r in got] == expected, view
        page = query_arrow(tmp_path, f"SELECT question_id FROM {view} LIMIT 50 OFFSET 1990").column(0).to_pylist()
        assert page == [q for q, _ in expected[1990:2040]]
    with open_catalog(tmp_path, {"questions": ["r"]}) as con:
        assert con.sql("SELECT count(*) FROM questions").fetchall() == [(3_000,)]


def test_turns_view_over_a_selection_joins_the_selected_labelling_run(out):
    sel = {"turns": ["r1"], "turn_labels": ["old"]}
    rows = query_arrow(out, "SELECT turn_index, loss_weight, label_policy FROM turns ORDER BY 1",
                       selection=sel).to_pylist()
    assert [(r["loss_weight"], r["label_policy"]) for r in rows] == [(None, None), (0.5, "old"), (None, None),
                                                                    (None, None)]
    lf = scan("turns", out, selection=sel).sort("turn_index").collect()
    assert lf["loss_weight"].to_list() == [None, 0.5, None, None]
