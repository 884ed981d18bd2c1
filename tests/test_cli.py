from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.storage import ShardWriter

runner = CliRunner()


@pytest.fixture
def out(tmp_path):
    with ShardWriter(tmp_path, "questions", run_id="r1", config_hash="feedbeef") as w:
        w.write_many([{"question_id": f"q{i}", "question": f"Q{i}?", "answer": "Lincoln", "hops": 2 + i % 2}
                      for i in range(4)])
    return tmp_path


def hopforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hopforge.cli", *args], capture_output=True, text=True)


def test_every_command_has_help():
    for cmd in ["sql", "tables", "runs", "inspect"]:
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "--out" in res.output


def test_sql_table_and_json_formats(out):
    res = runner.invoke(app, ["sql", "--out", str(out), "-f", "json",
                              "SELECT hops, count(*) AS n FROM questions GROUP BY 1 ORDER BY 1"])
    assert res.exit_code == 0, res.output
    assert [orjson.loads(line) for line in res.stdout.splitlines()] == [{"hops": 2, "n": 2}, {"hops": 3, "n": 2}]
    res = runner.invoke(app, ["sql", "--out", str(out), "SELECT answer FROM questions LIMIT 1"])
    assert "Lincoln" in res.output


def test_sql_csv_and_parquet_output(out, tmp_path):
    res = runner.invoke(app, ["sql", "--out", str(out), "-f", "csv", "SELECT question_id FROM questions ORDER BY 1"])
    assert res.stdout.splitlines() == ['"question_id"', '"q0"', '"q1"', '"q2"', '"q3"']
    target = tmp_path / "res.parquet"
    res = runner.invoke(app, ["sql", "--out", str(out), "-f", "parquet", "--output", str(target),
                              "SELECT * FROM questions"])
    import pyarrow.parquet as pq
    assert pq.read_table(target).num_rows == 4


def test_unsafe_sql_prints_one_line_and_exits_2(out):
    res = hopforge("sql", "--out", str(out), "COPY questions TO '/tmp/x.csv'")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: COPY statements are refused")
    assert "Traceback" not in res.stderr


def test_bad_config_prints_one_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[synth]\nhops = 3\n")
    res = hopforge("tables", "--config", str(p))
    assert res.returncode == 2 and "synth.hops: unknown key" in res.stderr and "Traceback" not in res.stderr


def test_tables_runs_inspect(out):
    res = runner.invoke(app, ["tables", "--out", str(out)])
    assert res.exit_code == 0 and "questions" in res.output
    res = runner.invoke(app, ["runs", "--out", str(out)])
    assert "r1" in res.output and "feedbeef" in res.output
    res = runner.invoke(app, ["inspect", "questions", "--out", str(out)])
    assert res.exit_code == 0 and "checksums: 1 shards ok" in res.output


def test_inspect_fails_on_a_changed_shard(out):
    shard = next((out / "questions" / "run=r1").glob("part-*.parquet"))
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    res = runner.invoke(app, ["inspect", "questions", "--out", str(out), "--rows", "0"])
    assert res.exit_code == 1 and "changed since written" in res.output


def test_missing_out_dir_is_clear(tmp_path):
    res = hopforge("sql", "--out", str(tmp_path / "nope"), "SELECT 1")
    assert res.returncode == 1 and "does not exist" in res.stderr
