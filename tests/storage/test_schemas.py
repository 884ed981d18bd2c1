from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from hopforge.errors import SchemaVersionError, StorageError
from hopforge.storage import read_table, schema_for, write_shard
from hopforge.storage.schemas import SCHEMA_VERSIONS, SCHEMAS, check_version


def test_every_pipeline_table_has_a_versioned_schema():
    for table in ("pages", "links", "redirects", "walks", "questions", "trajectories", "turns", "rejects"):
        schema = schema_for(table)
        assert schema.metadata[b"hopforge.schema_version"] == str(SCHEMA_VERSIONS[table]).encode()
        assert schema.metadata[b"hopforge.table"] == table.encode()


def test_columns_named_for_sql_users():
    assert {"question", "answer", "path"} <= set(SCHEMAS["questions"].names)
    assert SCHEMAS["questions"].field("path").type == pa.list_(pa.string())
    assert "loss_weight" in SCHEMAS["turn_labels"].names
    # nested data is typed, not JSON strings
    assert pa.types.is_struct(SCHEMAS["turns"].field("tool_args").type)


def test_unknown_table_is_a_clear_error():
    with pytest.raises(StorageError, match="unknown table 'question'"):
        schema_for("question")


def _turn_row(i: int) -> dict:
    return {
        "trajectory_id": "t1", "question_id": "q1", "turn_index": i, "role": "assistant",
        "content": "ok ✓ ünïcode", "tool_name": "search",
        "tool_args": {"query": "Abraham Lincoln birthplace", "k": 5, "title": None, "page": None, "text": None},
        "tokens_in": 10, "tokens_out": 3, "latency_ms": 1.5, "context_action": "none",
    }


@pytest.mark.parametrize("table", sorted(SCHEMAS))
def test_round_trip_every_table_empty_and_typed(tmp_path, table):
    empty = schema_for(table).empty_table()
    assert read_table(tmp_path, table).schema.equals(empty.schema, check_metadata=False)


def test_round_trip_nested_rows(tmp_path):
    rows = [_turn_row(i) for i in range(3)]
    write_shard(tmp_path, "turns", pa.Table.from_pylist(rows, schema=schema_for("turns")), run_id="r1")
    back = read_table(tmp_path, "turns").to_pylist()
    for row, orig in zip(back, rows, strict=True):
        for k, v in orig.items():
            assert row[k] == v
    ts = dt.datetime(2021, 7, 24, 18, 14, 35, tzinfo=dt.UTC)
    write_shard(tmp_path, "pages", pa.Table.from_pylist(
        [{"page_id": 38894, "title": "Abolitionism", "revision_timestamp": ts,
          "infobox": [{"key": "founded", "value": "1830s"}], "categories": ["Social movements"]}],
        schema=schema_for("pages")), run_id="r1")
    page = read_table(tmp_path, "pages").to_pylist()[0]
    assert page["revision_timestamp"] == ts and page["infobox"] == [{"key": "founded", "value": "1830s"}]


def test_newer_schema_version_is_refused():
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        check_version("questions", 99, "somewhere")
