"""Storage faults beyond tests/storage/test_shards.py (which covers disk full in ShardWriter, a killed
writer, changed/missing/unrecorded shards via verify, a newer manifest version) and
tests/test_cli.py::test_inspect_fails_on_a_changed_shard.

Added here: bit flips anywhere in a shard are caught on the *read path* (not only by
``hopforge inspect``) with one clear error naming the shard, earlier runs stay readable;
``hopforge sql`` on a corrupt shard is one line, no traceback; and the disk filling up in
the middle of a rollout flush (its turns and trajectories shards are one group commit)
surfaces as a StorageError naming the directories while every shard written before stays
intact and nothing of the failed group is visible, and a re-run after space is freed
completes the run with nothing lost or duplicated.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hopforge.errors import StorageError
from hopforge.rollouts import run_rollouts
from hopforge.storage import ShardWriter, read_table, verify
from hopforge.testing.scripted import OraclePolicy, ScriptedServer
from tests.reliability.test_faults import assert_each_question_once, many_questions
from tests.rollouts.rollout_fixtures import rollout_cfg, write_wiki

SRC = Path(__file__).resolve().parents[2] / "src"


def _questions(out: Path, run: str, lo: int, hi: int) -> None:
    with ShardWriter(out, "questions", run_id=run) as w:
        w.write_many([{"question_id": f"q{i}", "question": f"Which river is number {i}?", "answer": f"A{i}",
                       "hops": 2 + i % 3} for i in range(lo, hi)])


def test_bit_flips_are_caught_on_read_with_the_shard_named_and_other_runs_intact(tmp_path: Path) -> None:
    _questions(tmp_path, "r1", 0, 100)
    _questions(tmp_path, "r2", 100, 200)
    shard = next((tmp_path / "questions" / "run=r2").glob("part-*.parquet"))
    good = shard.read_bytes()
    expected = [f"A{i}" for i in range(100, 200)]
    outcomes: Counter[str] = Counter()
    for off in range(4, len(good) - 8, 11):  # every 11th byte of the shard, one flip at a time
        bad = bytearray(good)
        bad[off] ^= 0xFF
        shard.write_bytes(bytes(bad))
        try:
            t = read_table(tmp_path, "questions", run="r2")
        except StorageError as e:  # the only error a reader ever sees, and it names the culprit
            assert "run=r2/part-00000.parquet" in str(e) and "hopforge inspect questions" in str(e), str(e)
            outcomes["error"] += 1
            continue
        outcomes["same" if t.column("answer").to_pylist() == expected and
                 t.column("hops").to_pylist() == [2 + i % 3 for i in range(100, 200)] else "silently_wrong"] += 1
        assert verify(tmp_path, "questions").changed == ["run=r2/part-00000.parquet"]  # inspect still sees it
        # the earlier run is untouched and still reads
        assert read_table(tmp_path, "questions", run="r1").column("answer").to_pylist() == \
            [f"A{i}" for i in range(100)]
    shard.write_bytes(good)
    assert verify(tmp_path, "questions").clean
    n = sum(outcomes.values())
    print(f"\n[reliability] single-byte flips in a shard: {dict(outcomes)} of {n}")
    # Page CRCs (written by write_shard) catch corruption of page data on every read; what remains are
    # flips in bytes no value depends on, or (rarely) page headers: sha256 in `hopforge inspect` sees those.
    assert outcomes["error"] > 0.75 * n
    assert outcomes["silently_wrong"] <= 0.01 * n, outcomes


def test_hopforge_sql_on_a_corrupt_shard_is_one_line_without_traceback(tmp_path: Path) -> None:
    _questions(tmp_path, "r1", 0, 100)
    shard = next((tmp_path / "questions" / "run=r1").glob("part-*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 3:len(data) // 3 + 64] = b"\0" * 64
    shard.write_bytes(bytes(data))
    res = subprocess.run([sys.executable, "-m", "hopforge.cli", "sql", "--out", str(tmp_path),
                          "SELECT sum(hops) FROM questions"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = subprocess.run([sys.executable, "-m", "hopforge.cli", "inspect", "questions", "--out", str(tmp_path),
                          "--rows", "0"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}, timeout=120)
    assert res.returncode == 1 and "run=r1/part-00000.parquet" in res.stdout + res.stderr


class DiskFull:
    """Make the Nth shard write of ``table`` (and every later one) fail with ENOSPC, like a full disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, table: str, after: int) -> None:
        self.table, self.after, self.calls, self.failed = table, after, 0, 0
        real = pq.write_table

        def write_table(data, where, *a, **kw):
            if f"/{self.table}/" in str(where):
                self.calls += 1
                if self.calls > self.after:
                    self.failed += 1
                    raise OSError(errno.ENOSPC, "No space left on device", str(where))
            return real(data, where, *a, **kw)

        monkeypatch.setattr(pq, "write_table", write_table)


@pytest.mark.parametrize("table", ["turns", "trajectories"])
def test_disk_full_mid_rollout_flush_is_a_clear_error_and_earlier_shards_survive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    out = tmp_path / "out"
    qs = many_questions(30)
    write_wiki(out, qs)
    with ScriptedServer(OraclePolicy(qs), latency_s=0.005) as server:
        cfg = rollout_cfg(out, server.url, **{"rollout.flush_every": 4, "rollout.max_in_flight": 4})
        with monkeypatch.context() as m:
            full = DiskFull(m, table, after=3)  # 3 flushes succeed, then the disk is full
            with pytest.raises(StorageError) as exc:
                run_rollouts(cfg)
        assert full.failed >= 1
        msg = str(exc.value)
        assert "No space left on device" in msg and str(out / table / "run=rollouts-") in msg, msg
        # Every shard written before the disk filled up is complete and matches its manifest, and nothing
        # of the failed group is visible (no turns without their trajectories, no temp files).
        for t in ("turns", "trajectories"):
            assert verify(out, t).clean and not list((out / t).glob("run=*/.tmp-*"))
        assert not list((out / "_journal").glob("*.json"))
        done = read_table(out, "trajectories", columns=["trajectory_id"]).column(0).to_pylist()
        assert len(done) == 12  # exactly the 3 committed flushes of 4
        assert set(read_table(out, "turns", columns=["trajectory_id"]).column(0).to_pylist()) == set(done)
        # Space is freed: the same command resumes, redoing only what was not committed.
        stats = run_rollouts(cfg)
    assert (stats.resumed, stats.trajectories, stats.status) == (12, 18, {"answered": 18})
    assert_each_question_once(out, {q["question_id"] for q in qs})  # none lost, no turn twice
    assert not any(r["status"] == "error" for r in read_table(out, "trajectories", columns=["status"]).to_pylist())
