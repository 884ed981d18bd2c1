from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from hopforge.cli import app
from hopforge.config import load_config
from hopforge.storage import ShardWriter
from hopforge.testing.stages import complete_chain

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


def test_tables_and_inspect(out):
    res = runner.invoke(app, ["tables", "--out", str(out)])
    assert res.exit_code == 0 and "questions" in res.output
    res = runner.invoke(app, ["inspect", "questions", "--out", str(out)])
    assert res.exit_code == 0 and "checksums: 1 shards ok" in res.output


def test_runs_lists_each_stage_run_with_its_inputs_state_and_rows(tmp_path):
    cfg = load_config(None, {"run.out": str(tmp_path), "graph.dump": "fixture-wiki.xml"})
    qs = [{"question_id": f"q{i}", "question": f"Q{i}?", "answer": "Lincoln", "hops": 2, "passed": True}
          for i in range(4)]
    chain = complete_chain(cfg, {"questions": {"questions": qs}})
    res = runner.invoke(app, ["runs", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    records = orjson.loads(res.stdout)
    assert [(r["stage"], r["fingerprint"]) for r in records] == [("graph", chain["graph"].fingerprint),
                                                                 ("questions", chain["questions"].fingerprint)]
    q = records[1]
    assert q["inputs"] == {"graph": chain["graph"].fingerprint}  # what it read
    assert q["rows"] == {"questions": 4} and q["complete"]["batches"] == 1 and q["batches_done"] == 1
    assert q["settings"]["n_questions"] == cfg.synth.n_questions and q["settings"]["seed"] == 0
    assert records[0]["rows"] == {} and records[0]["settings"]["dump"] == {"name": "fixture-wiki.xml",
                                                                           "absent": True}
    res = subprocess.run([sys.executable, "-m", "hopforge.cli", "runs", "--out", str(tmp_path)], capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "250"}, check=False)
    line = next(x for x in res.stdout.splitlines() if chain["questions"].fingerprint in x)
    assert res.returncode == 0 and chain["graph"].fingerprint in line and "complete (1 batches)" in line
    assert "questions 4" in line


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


def test_sql_reads_the_configs_chain_or_the_latest_one_and_table_all_reads_every_run(tmp_path):
    out = tmp_path / "data"
    configs, chains = [], []
    for seed, ids in ((0, range(4)), (1, range(10, 13))):
        path = tmp_path / f"seed{seed}.toml"
        path.write_text(f'[run]\nout = "{out}"\nseed = {seed}\n[graph]\ndump = "fixture-wiki.xml"\n')
        qs = [{"question_id": f"q{i}", "question": f"Q{i}?", "answer": "A", "hops": 2, "passed": True} for i in ids]
        configs.append(path)
        chains.append(complete_chain(load_config(path), {"questions": {"questions": qs}}))

    def count(*args: str) -> list[dict]:
        sql = "SELECT count(*) AS n, min(question_id) AS first, min(run) AS run FROM questions"
        res = runner.invoke(app, ["sql", *args, "-f", "json", sql])
        assert res.exit_code == 0, res.output
        return orjson.loads(res.stdout)

    assert count("--config", str(configs[0])) == {"n": 4, "first": "q0", "run": chains[0]["questions"].fingerprint}
    assert count("--config", str(configs[1])) == {"n": 3, "first": "q10", "run": chains[1]["questions"].fingerprint}
    assert count("--out", str(out))["first"] == "q10"  # no config: the most recently completed chain
    res = runner.invoke(app, ["sql", "--out", str(out), "-f", "json",
                              "SELECT run, count(*) AS n FROM questions_all GROUP BY run ORDER BY n DESC"])
    assert [orjson.loads(x) for x in res.stdout.splitlines()] == [
        {"run": chains[0]["questions"].fingerprint, "n": 4}, {"run": chains[1]["questions"].fingerprint, "n": 3}]
