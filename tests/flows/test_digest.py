"""Upstream digests: a task's cache key changes exactly when the tables it reads change."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from hopforge.flows.digest import file_digest, tables_digest
from hopforge.storage import write_shard
from hopforge.storage.schemas import schema_for


def _questions(n: int) -> pa.Table:
    return pa.Table.from_pylist([{"question_id": f"q{i}", "question": "?", "answer": "a"} for i in range(n)],
                                schema=schema_for("questions"))


def test_digest_changes_when_a_read_table_gains_a_shard_only(tmp_path: Path) -> None:
    before = tables_digest(tmp_path, ("questions", "pages"))
    assert before == tables_digest(tmp_path, ("pages", "questions"))  # order-independent
    write_shard(tmp_path, "questions", _questions(2), run_id="r")
    after = tables_digest(tmp_path, ("questions", "pages"))
    assert after != before
    # A table the task does not read leaves its key alone.
    write_shard(tmp_path, "kept", pa.Table.from_pylist([{"trajectory_id": "t"}], schema=schema_for("kept")),
                run_id="r")
    assert tables_digest(tmp_path, ("questions", "pages")) == after


def test_file_digest_tracks_size_and_mtime(tmp_path: Path) -> None:
    p = tmp_path / "dump.xml.bz2"
    assert file_digest(p).endswith(":absent")
    p.write_bytes(b"x")
    d1 = file_digest(p)
    os.utime(p, ns=(1, 1))
    assert file_digest(p) != d1
