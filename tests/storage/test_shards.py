from __future__ import annotations

import fcntl
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
from hopforge.storage import (
    ShardWriter,
    read_manifest,
    read_table,
    recover,
    runs_of,
    shard_paths,
    verify,
    write_group,
    write_shard,
)
from hopforge.storage import shards as shards_mod
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


# -- group commit ---------------------------------------------------------------------------------------------


def _kept(*ids: str) -> pa.Table:
    return pa.Table.from_pylist([{"trajectory_id": i, "correct": True} for i in ids], schema=schema_for("kept"))


def _rejects_table(n: int, tag: str = "x") -> pa.Table:
    return pa.Table.from_pylist(_rejects(n, tag), schema=schema_for("rejects"))


def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".tmp-*"))


def _journals(out: Path) -> list[Path]:
    return sorted((out / "_journal").glob("*.json")) if (out / "_journal").exists() else []


def test_group_commit_makes_every_table_visible_with_its_batch(tmp_path):
    infos = write_group(tmp_path, {"rejects": _rejects_table(3), "walks": schema_for("walks").empty_table(),
                                   "kept": _kept("t1", "t2")}, run_id="r1", batch="b7", config_hash="cafe")
    assert [(i.table, i.rows, i.batch) for i in infos] == [("rejects", 3, "b7"), ("kept", 2, "b7")]
    assert read_table(tmp_path, "kept").column("trajectory_id").to_pylist() == ["t1", "t2"]
    assert read_table(tmp_path, "rejects").num_rows == 3
    assert [(e.batch, e.config_hash) for e in read_manifest(tmp_path, "rejects")] == [("b7", "cafe")]
    assert not (tmp_path / "walks").exists()  # an empty table writes nothing
    assert verify(tmp_path, "rejects").clean and verify(tmp_path, "kept").clean
    assert _journals(tmp_path) == [] and _temps(tmp_path) == []


GROUP_SCRIPT = r"""
import os, signal, sys
import pyarrow as pa
from hopforge.storage import shards
from hopforge.storage.schemas import schema_for

out, target, call, action = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
real, calls = getattr(shards, target), []

def hooked(*a, **k):
    calls.append(1)
    if len(calls) == call:
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        print("paused", flush=True)
        sys.stdin.readline()
    return real(*a, **k)

setattr(shards, target, hooked)
rejects = pa.Table.from_pylist([{"stage": "s", "row_id": "r1"}, {"stage": "s", "row_id": "r2"}],
                               schema=schema_for("rejects"))
kept = pa.Table.from_pylist([{"trajectory_id": "t1"}], schema=schema_for("kept"))
shards.write_group(out, {"rejects": rejects, "kept": kept}, run_id="r1", batch="b1")
print("done", flush=True)
"""


def _writer(out: Path, target: str, call: int, action: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", GROUP_SCRIPT, str(out), target, str(call), action],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _kill_writer(out: Path, target: str, call: int) -> None:
    proc = _writer(out, target, call, "kill")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _visible_once(out: Path) -> None:
    for table, ids in (("rejects", ["r1", "r2"]), ("kept", ["t1"])):
        assert len(shard_paths(out, table)) == 1, table
        assert [e.batch for e in read_manifest(out, table)] == ["b1"], table
        assert read_table(out, table, columns=["row_id" if table == "rejects" else "trajectory_id"]).column(0) \
            .to_pylist() == ids
        assert verify(out, table).clean, table


# The group links rejects then kept, then records rejects then kept; `left` is what the kill leaves
# (visible rejects, visible kept, recorded rejects).
@pytest.mark.parametrize(("target", "call", "left"), [("_link_next_part", 2, (1, 0, 0)),
                                                      ("_append_manifest", 1, (1, 1, 0)),
                                                      ("_append_manifest", 2, (1, 1, 1))],
                         ids=["between-links", "linked-none-recorded", "between-records"])
def test_writer_killed_mid_commit_is_rolled_forward_exactly_once(tmp_path, target, call, left):
    _kill_writer(tmp_path, target, call)
    assert len(_journals(tmp_path)) == 1
    assert (len(shard_paths(tmp_path, "rejects")), len(shard_paths(tmp_path, "kept")),
            len(read_manifest(tmp_path, "rejects"))) == left
    # Another writer in the same run directory must not clean the temps the journal still needs.
    write_shard(tmp_path, "rejects", _rejects_table(1, "other"), run_id="r2")
    write_shard(tmp_path, "kept", _kept("other"), run_id="r1")
    assert len(_temps(tmp_path)) == 2

    assert recover(tmp_path) == 1
    assert recover(tmp_path) == 0
    assert _journals(tmp_path) == [] and _temps(tmp_path) == []
    assert read_table(tmp_path, "rejects", batch="b1").column("row_id").to_pylist() == ["r1", "r2"]
    assert sorted(read_table(tmp_path, "kept").column("trajectory_id").to_pylist()) == ["other", "t1"]
    assert [e.batch for e in read_manifest(tmp_path, "kept")].count("b1") == 1
    assert verify(tmp_path, "rejects").clean and verify(tmp_path, "kept").clean


def test_writer_killed_before_its_journal_leaves_nothing_visible(tmp_path):
    _kill_writer(tmp_path, "_write_journal", 1)
    assert len(_temps(tmp_path)) == 2 and _journals(tmp_path) == []
    assert shard_paths(tmp_path, "rejects") == [] and shard_paths(tmp_path, "kept") == []
    assert recover(tmp_path) == 0
    assert _temps(tmp_path) == []
    assert read_manifest(tmp_path, "rejects") == [] and read_table(tmp_path, "kept").num_rows == 0


def test_recover_leaves_a_live_writers_journal_alone(tmp_path):
    proc = _writer(tmp_path, "_link_next_part", 1, "pause")
    try:
        assert proc.stdout.readline().strip() == "paused"
        [journal] = _journals(tmp_path)
        assert recover(tmp_path) == 0
        write_shard(tmp_path, "kept", _kept("other"), run_id="r1")  # cleans dead writers' temps only
        assert journal.exists() and len(_temps(tmp_path)) == 2
        assert shard_paths(tmp_path, "rejects") == []
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
    finally:
        proc.kill()
        proc.wait()
    assert _journals(tmp_path) == [] and _temps(tmp_path) == []
    assert len(shard_paths(tmp_path, "rejects")) == 1 and len(read_manifest(tmp_path, "kept")) == 2


def test_another_hosts_journal_is_recovered_only_once_stale(tmp_path):
    _kill_writer(tmp_path, "_link_next_part", 2)
    [journal] = _journals(tmp_path)
    doc = orjson.loads(journal.read_bytes())
    doc.update(host="elsewhere", pid=os.getpid())  # a pid alive here means nothing for another host
    journal.write_bytes(orjson.dumps(doc))
    assert recover(tmp_path, stale_after_s=600) == 0 and journal.exists()
    old = time.time() - 601
    os.utime(journal, (old, old))
    assert recover(tmp_path, stale_after_s=600) == 1
    _visible_once(tmp_path)


def test_recover_skips_a_journal_another_recover_is_working_on(tmp_path):
    _kill_writer(tmp_path, "_link_next_part", 2)
    [journal] = _journals(tmp_path)
    with open(journal, "rb+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        assert recover(tmp_path) == 0
        assert len(shard_paths(tmp_path, "kept")) == 0 and len(_temps(tmp_path)) == 2
    assert recover(tmp_path) == 1
    _visible_once(tmp_path)


def test_failed_commit_in_this_process_is_finished_by_recover(tmp_path, monkeypatch):
    real, calls = shards_mod._append_manifest, []

    def disk_full_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(shards_mod, "_append_manifest", disk_full_on_second)
    rejects = pa.Table.from_pylist([{"stage": "s", "row_id": "r1"}, {"stage": "s", "row_id": "r2"}],
                                   schema=schema_for("rejects"))
    with pytest.raises(StorageError, match="No space left on device.*lets `recover` finish the group"):
        write_group(tmp_path, {"rejects": rejects, "kept": _kept("t1")}, run_id="r1", batch="b1")
    monkeypatch.undo()
    assert read_manifest(tmp_path, "kept") == []
    assert recover(tmp_path) == 1
    _visible_once(tmp_path)


# -- batches ----------------------------------------------------------------------------------------------------


def test_read_table_and_shard_paths_select_one_batch(tmp_path):
    write_group(tmp_path, {"rejects": _rejects_table(2, "a")}, run_id="r1", batch="b1")
    write_shard(tmp_path, "rejects", _rejects_table(3, "b"), run_id="r1", batch="b2")
    with ShardWriter(tmp_path, "rejects", run_id="r2", batch="b2", rows_per_shard=2) as w:
        w.write_many(_rejects(3, "c"))
    write_shard(tmp_path, "rejects", _rejects_table(1, "n"), run_id="r2")
    ids = lambda **kw: sorted(read_table(tmp_path, "rejects", columns=["row_id"], **kw).column(0).to_pylist())  # noqa: E731
    assert ids(batch="b1") == ["a0", "a1"]
    assert ids(batch="b2") == ["b0", "b1", "b2", "c0", "c1", "c2"]
    assert ids(batch="b2", run="r2") == ["c0", "c1", "c2"]
    assert ids(batch="nope") == []
    assert read_table(tmp_path, "rejects").num_rows == 9
    assert [str(p.relative_to(tmp_path / "rejects")) for p in shard_paths(tmp_path, "rejects", batch="b2")] == [
        "run=r1/part-00001.parquet", "run=r2/part-00000.parquet", "run=r2/part-00001.parquet"]
    assert shard_paths(tmp_path, "rejects", run="r1", batch="b1") == [tmp_path / "rejects/run=r1/part-00000.parquet"]
    assert runs_of(tmp_path, "rejects") == ["r1", "r2"] and runs_of(tmp_path, "kept") == []


def test_manifest_lines_without_batch_still_read(tmp_path):
    write_shard(tmp_path, "rejects", _rejects_table(2), run_id="r1")
    manifest = tmp_path / "rejects" / "_manifest.jsonl"
    line = orjson.loads(manifest.read_bytes())
    del line["batch"]
    manifest.write_bytes(orjson.dumps(line) + b"\n")
    [entry] = read_manifest(tmp_path, "rejects")
    assert entry.batch is None and entry.rows == 2
    assert read_table(tmp_path, "rejects").num_rows == 2
    assert read_table(tmp_path, "rejects", batch="b1").num_rows == 0
    assert verify(tmp_path, "rejects").clean


def test_group_writer_adds_shards_one_at_a_time_and_commits_them_as_one_group(tmp_path):
    from hopforge.storage import GroupWriter, iter_batches

    with GroupWriter(tmp_path, run_id="r1", batch="b1") as g:
        for i in range(3):
            g.add("rejects", _rejects_table(2, f"c{i}"))
            assert read_manifest(tmp_path, "rejects") == [] and shard_paths(tmp_path, "rejects") == []
        g.add("kept", _kept("t1"))
        assert g.rows == {"rejects": 6, "kept": 1}
        g.commit()
    assert [(i.table, i.rows) for i in g.infos] == [("rejects", 2)] * 3 + [("kept", 1)]
    assert read_table(tmp_path, "rejects").num_rows == 6 and _temps(tmp_path) == [] and _journals(tmp_path) == []
    # iter_batches streams in read_table's order, projected, in batches of at most batch_size rows.
    ids = [b.column(0).to_pylist() for b in iter_batches(tmp_path, "rejects", 4, run="r1", columns=["row_id"])]
    assert [x for b in ids for x in b] == read_table(tmp_path, "rejects").column("row_id").to_pylist()
    assert max(len(b) for b in ids) <= 4
    # write_group takes an iterable of tables per table too: one shard each.
    infos = write_group(tmp_path, {"kept": iter([_kept("t2"), _kept("t3")])}, run_id="r2", batch="b2")
    assert [i.rows for i in infos] == [1, 1]


def test_group_writer_left_with_an_error_drops_every_shard_it_wrote(tmp_path):
    from hopforge.storage import GroupWriter

    with pytest.raises(RuntimeError), GroupWriter(tmp_path, run_id="r1", batch="b1") as g:
        g.add("rejects", _rejects_table(2))
        g.add("kept", _kept("t1"))
        assert len(_temps(tmp_path)) == 2
        raise RuntimeError("caller failed")
    assert _temps(tmp_path) == [] and _journals(tmp_path) == []
    assert read_manifest(tmp_path, "rejects") == [] and read_table(tmp_path, "kept").num_rows == 0
    with pytest.raises(StorageError, match="already committed or abandoned"):
        g.add("kept", _kept("t2"))
