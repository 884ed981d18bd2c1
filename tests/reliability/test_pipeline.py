"""The whole pipeline as a user runs it (``hopforge run``, Prefect flows, ephemeral API) on the
real enwiki-233 dump, against a faulty teacher, with API keys planted in the config and
the environment.

The teacher is the scripted server in this process (so the test can count what it
injected and see the Authorization header), reached through ``teacher.base_url``:
10 % of requests fail (HTTP 500, hang past the timeout, connection reset, truncated
JSON, invalid tool call), and the server is stopped and restarted on the same port
while rollouts are running.

Expected: the run completes; every passed question has exactly one trajectory,
which is kept or rejected with a reason; retries and tokens are recorded and add
up; no row is duplicated; and neither key appears in any file under the run's
directory (data, manifests, Prefect results, the Prefect database with its
artifacts and logs, the export and its card) nor in the command's output.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from hopforge.storage import read_table, verify
from hopforge.testing.scripted import FAULT_KINDS, FaultPlan, load_oracle
from tests.reliability.test_security import CONFIG_KEY, ENV_KEY, RecordingServer

SRC = Path(__file__).resolve().parents[2] / "src"
WIKI = (Path(__file__).resolve().parents[2] / ".." / "shared" / "wiki").resolve()
TRANSIENT = {"http_500", "timeout", "truncated_json", "drop"}


class LazyOracle:
    """The oracle over OUT's questions table, loaded on the first request (the pipeline writes the
    questions in the same run, before its first rollout)."""

    def __init__(self, out: Path) -> None:
        self.out, self.inner, self.lock = out, None, threading.Lock()

    def __call__(self, req):
        with self.lock:
            if self.inner is None:
                self.inner = load_oracle(str(self.out))
        return self.inner(req)


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pipeline_survives_faults_and_a_teacher_restart_and_never_leaks_keys(tmp_path: Path) -> None:
    dump = WIKI / "enwiki-233.xml.bz2"
    if not dump.exists():
        pytest.skip(f"{dump} not found: the shared Wikipedia fixtures live in ../shared/wiki beside the repo")
    run_dir = tmp_path / "run"  # everything the run writes lives here and is grepped for the keys
    out = run_dir / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "pipeline.toml"  # the one file allowed to hold the config key
    sections = {
        "graph": {"dump": str(dump), "workers": 1, "batch_pages": 64},
        "synth": {"n_questions": 160, "hops_min": 2, "hops_max": 3, "batch_size": 40},
        "teacher": {"backend": "scripted", "base_url": f"http://127.0.0.1:{port}", "api_key": CONFIG_KEY},
        "rollout": {"batch_questions": 4, "max_turns": 12, "max_in_flight": 4, "retries": 30,
                    "request_timeout_s": 1.0, "retry_base_s": 0.05, "retry_max_s": 0.5, "flush_every": 2},
        "filters": {"min_tool_calls": 1},
        "flows": {"max_workers": 2, "task_retries": 0},
    }
    config.write_text("\n".join(f"[{name}]\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in vals.items()) + "\n"
                                for name, vals in sections.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update({"PYTHONPATH": str(SRC), "PREFECT_HOME": str(run_dir / "prefect-home"),
                "PREFECT_LOGGING_LEVEL": "INFO", "HOPFORGE_API_KEY": ENV_KEY, "HF_TOKEN": "hf_PLANTED_token_789"})

    server = RecordingServer(LazyOracle(out), port=port, latency_s=0.02,
                             faults=FaultPlan(rate=0.10, kinds=FAULT_KINDS, seed=5, hang_s=3.0))
    server.start()
    injected: Counter[str] = Counter()
    (run_dir / "prefect-home").mkdir(parents=True)
    # Output to files, not pipes: nobody reads a pipe while the test polls, and a full pipe blocks the run.
    stdout_f, stderr_f = open(tmp_path / "stdout.log", "wb"), open(tmp_path / "stderr.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "hopforge.cli", "run", "--config", str(config), "--out", str(out),
                             "--json", str(run_dir / "summary.json")], env=env, cwd=tmp_path,
                            stdout=stdout_f, stderr=stderr_f)
    restarted_after = None
    try:
        # Restart the teacher once rollouts have written something (and are still running).
        deadline = time.monotonic() + 500
        while proc.poll() is None and time.monotonic() < deadline:
            if restarted_after is None and (out / "trajectories" / "_manifest.jsonl").exists():
                restarted_after = read_table(out, "trajectories", columns=["trajectory_id"]).num_rows
                server.stop()  # connections in flight are cut, new ones refused
                injected.update(server.faults_injected)
                time.sleep(1.0)
                server.faults_injected.clear()
                server.start()  # same port
            time.sleep(0.05)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stdout_f.close()
        stderr_f.close()
        injected.update(server.faults_injected)
        server.stop()
    log = (tmp_path / "stdout.log").read_text(errors="replace") + (tmp_path / "stderr.log").read_text(errors="replace")
    assert proc.returncode == 0, log[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ok"] and not summary["failures"], summary["failures"]
    assert restarted_after is not None, "rollouts never wrote a shard while the test watched"

    # Every passed question: exactly one trajectory; every trajectory: kept or rejected with a reason.
    q = read_table(out, "questions", columns=["question_id", "passed"]).to_pylist()
    screened_out = {r["row_id"] for r in read_table(out, "rejects").to_pylist() if r["stage"] == "screen"}
    passed = {r["question_id"] for r in q if r["passed"]} - screened_out
    traj = read_table(out, "trajectories").to_pylist()
    assert Counter(t["question_id"] for t in traj) == Counter({qid: 1 for qid in passed})
    assert all(t["status"] != "error" for t in traj), [t["error"] for t in traj if t["status"] == "error"]
    kept = set(read_table(out, "kept", columns=["trajectory_id"]).column(0).to_pylist())
    rejected = {r["row_id"]: r["reason"] for r in read_table(out, "rejects").to_pylist()
                if r["stage"] == "filter" and r["row_table"] == "kept"}
    tids = {t["trajectory_id"] for t in traj}
    assert kept | set(rejected) == tids and not kept & set(rejected) and kept
    assert all(rejected.values())
    turns = read_table(out, "turns", columns=["trajectory_id", "turn_index"])
    keys = Counter(zip(turns.column(0).to_pylist(), turns.column(1).to_pylist(), strict=True))
    assert max(keys.values()) == 1
    for table in ("questions", "trajectories", "turns", "kept", "rejects", "turn_labels"):
        assert verify(out, table).clean, table

    # Retries and tokens: recorded per trajectory and adding up to what the server did.
    transient = sum(injected[k] for k in TRANSIENT)
    retries = sum(t["retries"] for t in traj)
    assert set(injected) >= {"http_500", "garbage"} and transient > 0, injected
    # Every injected transient fault cost one retry; the restart cost more (refused/cut connections).
    assert retries >= transient, (retries, injected)
    assert sum(t["errors"] for t in traj) == injected["garbage"]
    assert summary["funnel"]["tokens"]["tokens_in"] == sum(t["tokens_in"] for t in traj) > 0
    assert all(t["tokens_out"] > 0 for t in traj)

    # Keys: the config key was really sent; neither key is written or printed anywhere.
    assert server.auth == {f"Bearer {CONFIG_KEY}"}
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files), "the Prefect database is not under the run dir"
    assert (out / "export" / "trl" / "README.md").is_file()
    for p in files:
        data = p.read_bytes()
        for key in (CONFIG_KEY, ENV_KEY, "hf_PLANTED_token_789"):
            assert key.encode() not in data, f"{key} leaked into {p}"
    for key in (CONFIG_KEY, ENV_KEY, "hf_PLANTED_token_789"):
        assert key not in log
    print(f"\n[reliability] pipeline: {len(traj)} trajectories ({len(kept)} kept, {len(rejected)} rejected), "
          f"faults {dict(injected)}, retries {retries}, restart after {restarted_after} written, "
          f"{len(files)} files grepped")
