from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hopforge.errors import SchemaVersionError, StorageError
from hopforge.storage import ShardWriter, read_manifest, read_table, shard_paths, verify, write_shard
from hopforge.storage.schemas import schema_for


def _rejects(n: int, tag: str = "x") -> list[dict]:
    return [{"stage": "test", "step": "s", "reason": "r", "row_table": "questions", "row_id": f"{tag}{i}",
             "detail": "d" * 50} for i in range(n)]


def test_writer_shards_by_row_count_and_records_manifest(tmp_path):
    with ShardWriter(tmp_path, "rejects", run_id="r1", config_hash="c0ffee", rows_per_shard=40) as w:
        w.write_many(_rejects(100))
    paths = shard_paths(tmp_path, "rejects")
    assert [p.name for p in paths] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    entries = read_manifest(tmp_path, "rejects")
    assert [e.rows for e in entries] == [40, 40, 20]
    assert {e.config_hash for e in entries} == {"c0ffee"} and entries[0].run == "r1"
    assert pq.read_metadata(paths[0]).row_group(0).column(0).compression == "ZSTD"
    assert read_table(tmp_path, "rejects").num_rows == 100
    assert verify(tmp_path, "rejects").clean


def test_unknown_column_and_wrong_type_are_clear_errors(tmp_path):
    w = ShardWriter(tmp_path, "rejects", run_id="r1")
    with pytest.raises(StorageError, match="unknown columns: \\['bogus'\\]"):
        w.write({"stage": "x", "bogus": 1})
    w.write({"stage": "x", "row_id": object()})
    with pytest.raises(StorageError, match="table 'rejects'"):
        w.flush()


def test_manifest_detects_changed_missing_and_unrecorded_shards(tmp_path):
    with ShardWriter(tmp_path, "rejects", run_id="r1", rows_per_shard=10) as w:
        w.write_many(_rejects(30))
    p0, p1, p2 = shard_paths(tmp_path, "rejects")
    data = bytearray(p0.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p0.write_bytes(bytes(data))
    p1.unlink()
    (p2.parent / "part-00009.parquet").write_bytes(p2.read_bytes())
    rep = verify(tmp_path, "rejects")
    assert rep.changed == ["run=r1/part-00000.parquet"]
    assert rep.missing == ["run=r1/part-00001.parquet"]
    assert rep.unrecorded == ["run=r1/part-00009.parquet"]
    assert rep.ok == 1 and not rep.clean


def test_manifest_from_newer_schema_version_is_refused_and_data_kept(tmp_path):
    with ShardWriter(tmp_path, "rejects", run_id="r1") as w:
        w.write_many(_rejects(3))
    manifest = tmp_path / "rejects" / "_manifest.jsonl"
    entry = json.loads(manifest.read_text().splitlines()[0])
    entry["schema_version"] = 7
    with open(manifest, "a") as f:
        f.write(json.dumps(entry) + "\n")
    with pytest.raises(SchemaVersionError, match="_manifest.jsonl:2.*schema version 7"):
        read_table(tmp_path, "rejects")
    assert len(shard_paths(tmp_path, "rejects")) == 1  # nothing deleted


def test_corrupt_manifest_line_names_file_and_line(tmp_path):
    with ShardWriter(tmp_path, "rejects", run_id="r1") as w:
        w.write_many(_rejects(1))
    with open(tmp_path / "rejects" / "_manifest.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(StorageError, match="_manifest.jsonl:2: unreadable manifest line"):
        read_manifest(tmp_path, "rejects")


def _write_many_shards(args):
    out, tag, n = args
    for i in range(n):
        write_shard(out, "rejects", pa.Table.from_pylist(_rejects(25, f"{tag}-{i}-"), schema=schema_for("rejects")),
                    run_id="shared")
    return tag


def test_concurrent_writers_never_clobber(tmp_path):
    with ProcessPoolExecutor(max_workers=4) as pool:
        list(pool.map(_write_many_shards, [(str(tmp_path), f"w{k}", 10) for k in range(4)]))
    paths = shard_paths(tmp_path, "rejects")
    assert len(paths) == 40
    entries = read_manifest(tmp_path, "rejects")
    assert len(entries) == 40 and len({e.path for e in entries}) == 40
    ids = read_table(tmp_path, "rejects", columns=["row_id"]).column("row_id").to_pylist()
    assert len(ids) == 1000 and len(set(ids)) == 1000
    assert verify(tmp_path, "rejects").clean


KILL_SCRIPT = r"""
import sys, pyarrow as pa
from hopforge.storage import write_shard
from hopforge.storage.schemas import schema_for
out = sys.argv[1]
write_shard(out, "rejects", pa.Table.from_pylist([{"stage": "ok", "row_id": "first"}], schema=schema_for("rejects")), run_id="r1")
print("first-done", flush=True)
n = 3_000_000
big = pa.table({"stage": pa.array(["s"] * n), "step": pa.array(["t"] * n), "reason": pa.array(["r"] * n),
                "row_table": pa.array(["q"] * n), "row_id": pa.array([f"id-{i}-" + "x" * 40 for i in range(n)]),
                "detail": pa.array([str(i) * 20 for i in range(n)])})
print("writing", flush=True)
write_shard(out, "rejects", big, run_id="r1")
print("second-done", flush=True)
"""


def test_killed_writer_leaves_no_visible_partial_shard(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "first-done"
    assert proc.stdout.readline().strip() == "writing"
    run_dir = tmp_path / "rejects" / "run=r1"
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".tmp-") and p.stat().st_size > 0 for p in run_dir.iterdir()):
        assert time.monotonic() < deadline, "the writer never started its temp file"
        assert proc.poll() is None, "the writer finished before it could be killed"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Only the first, complete shard is visible and recorded; the manifest is consistent.
    assert [p.name for p in shard_paths(tmp_path, "rejects")] == ["part-00000.parquet"]
    assert [e.rows for e in read_manifest(tmp_path, "rejects")] == [1]
    assert verify(tmp_path, "rejects").clean
    assert read_table(tmp_path, "rejects").column("row_id").to_pylist() == ["first"]
    # The next writer cleans the dead writer's temp file and carries on.
    write_shard(tmp_path, "rejects", pa.Table.from_pylist([{"row_id": "after"}], schema=schema_for("rejects")),
                run_id="r1")
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]
    assert sorted(read_table(tmp_path, "rejects").column("row_id").to_pylist()) == ["after", "first"]


def test_write_failure_is_a_storage_error_and_keeps_earlier_shards(tmp_path, monkeypatch):
    with ShardWriter(tmp_path, "rejects", run_id="r1") as w:
        w.write_many(_rejects(5))

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(StorageError, match="No space left on device"):
        write_shard(tmp_path, "rejects", pa.Table.from_pylist(_rejects(5, "y"), schema=schema_for("rejects")),
                    run_id="r1")
    monkeypatch.undo()
    assert read_table(tmp_path, "rejects").num_rows == 5
    assert verify(tmp_path, "rejects").clean
    assert not [p for p in (tmp_path / "rejects" / "run=r1").iterdir() if p.name.startswith(".tmp-")]


def test_manifest_lines_are_json_with_provenance(tmp_path):
    write_shard(tmp_path, "rejects", pa.Table.from_pylist(_rejects(2), schema=schema_for("rejects")),
                run_id="r9", config_hash="abc")
    line = orjson.loads((tmp_path / "rejects" / "_manifest.jsonl").read_bytes().splitlines()[0])
    assert line["run"] == "r9" and line["config_hash"] == "abc" and line["rows"] == 2
    assert len(line["sha256"]) == 64 and line["schema_version"] == 1 and line["hopforge_version"]
    assert Path(tmp_path / "rejects" / line["path"]).stat().st_size == line["bytes"]


def test_read_table_projects_columns_and_counts_rows_with_no_columns(tmp_path):
    write_shard(tmp_path, "rejects", pa.Table.from_pylist(_rejects(7), schema=schema_for("rejects")), run_id="r1")
    write_shard(tmp_path, "rejects", pa.Table.from_pylist(_rejects(5, "y"), schema=schema_for("rejects")),
                run_id="r2")
    assert read_table(tmp_path, "rejects", columns=["row_id"]).column_names == ["row_id"]
    none = read_table(tmp_path, "rejects", columns=[])
    assert none.num_columns == 0 and none.num_rows == 12
    assert read_table(tmp_path, "rejects", run="r2").num_rows == 5
    with pytest.raises(StorageError, match="no column"):
        read_table(tmp_path, "rejects", columns=["nope"])
