"""catalog.fetch_arrow: guarded queries with bound parameters on a catalog kept open."""

from __future__ import annotations

import pytest

from hopforge.errors import SQLGuardError
from hopforge.storage import ShardWriter, open_catalog
from hopforge.storage.catalog import fetch_arrow


@pytest.fixture
def out(tmp_path):
    with ShardWriter(tmp_path, "questions", run_id="r1") as w:
        w.write_many([{"question_id": f"q{i}", "answer": "O'Brien" if i == 1 else f"A{i}", "hops": 2 + i % 2}
                      for i in range(4)])
    return tmp_path


def test_parameters_are_bound(out):
    with open_catalog(out) as con:
        rows = fetch_arrow(con, "SELECT question_id FROM questions WHERE answer = ? OR hops = ? ORDER BY 1",
                           ["O'Brien", 99]).to_pylist()
        assert rows == [{"question_id": "q1"}]
        ids = fetch_arrow(con, "SELECT question_id FROM questions WHERE question_id IN (SELECT unnest(?::VARCHAR[])) "
                               "ORDER BY 1", [["q0", "q3", "zz"]]).column("question_id").to_pylist()
        assert ids == ["q0", "q3"]
        assert fetch_arrow(con, "SELECT * FROM questions", limit=2).num_rows == 2


def test_guard_applies_and_connection_stays_locked(out):
    with open_catalog(out) as con:
        cur = con.cursor()
        with pytest.raises(SQLGuardError, match="DELETE statements are refused"):
            fetch_arrow(cur, "DELETE FROM questions WHERE hops = ?", [2])
        with pytest.raises(SQLGuardError, match="refused: Permission Error"):
            fetch_arrow(cur, "SELECT * FROM read_text(?)", ["/etc/hostname"])
        assert fetch_arrow(cur, "SELECT count(*) AS n FROM questions").to_pylist() == [{"n": 4}]
