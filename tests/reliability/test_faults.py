"""Fault injection against the rollout engine and the filter stage with the scripted server.

What tests/rollouts and tests/llm already prove (not repeated here): each fault kind is retried
and counted on a hand-picked schedule (tests/rollouts/test_engine.py::test_faults_are_survived_and_recorded,
tests/llm/test_client.py), kill -9 of the *engine* loses only trajectories in flight, and a
*managed* server that dies is restarted by the launcher.

Added here: a 10 % random fault rate over every fault kind on many questions,
followed by the filter stage (every question ends kept or rejected with a reason;
retries and tokens add up); and an *external* teacher server (``teacher.base_url``)
killed with SIGKILL and restarted on the same port mid-run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from hopforge.filters import run_filters
from hopforge.rollouts import run_rollouts
from hopforge.storage import query_arrow, read_table, verify
from hopforge.testing.scripted import (
    FAULT_KINDS,
    FaultPlan,
    OraclePolicy,
    ScriptedServer,
)
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki

SRC = Path(__file__).resolve().parents[2] / "src"
TRANSIENT = {"http_500", "timeout", "truncated_json", "drop"}


def many_questions(n: int) -> list[dict]:
    """n distinct questions over the fixture wiki's two real chains (answerable by the oracle)."""
    return [{**QUESTIONS[i % 2], "question_id": f"q{i:03d}", "question": f"{QUESTIONS[i % 2]['question']} (v{i})"}
            for i in range(n)]


def rows(out: Path, sql: str) -> list[dict]:
    return query_arrow(out, sql).to_pylist()


def assert_each_question_once(out: Path, qids: set[str]) -> None:
    traj = read_table(out, "trajectories", columns=["trajectory_id", "question_id"])
    assert Counter(traj.column("question_id").to_pylist()) == Counter({q: 1 for q in qids})  # none lost or doubled
    keys = Counter(zip(*(read_table(out, "turns", columns=[c]).column(0).to_pylist()
                         for c in ("trajectory_id", "turn_index")), strict=True))
    assert keys and max(keys.values()) == 1, "a turn was written twice"
    assert {t for t, _ in keys} == set(traj.column("trajectory_id").to_pylist()), "turns without a trajectory"
    for table in ("trajectories", "turns"):
        assert verify(out, table).clean


@pytest.mark.parametrize("protocol", ["chat", "text"])
def test_ten_percent_faults_every_question_kept_or_rejected_with_counts(tmp_path: Path, protocol: str) -> None:
    out = tmp_path / "out"
    qs = many_questions(40)
    write_wiki(out, qs)
    plan = FaultPlan(rate=0.10, kinds=FAULT_KINDS, seed=11, hang_s=2.0)
    with ScriptedServer(OraclePolicy(qs), faults=plan) as server:
        cfg = rollout_cfg(out, server.url, **{
            "teacher.protocol": protocol, "rollout.request_timeout_s": 0.5, "rollout.retries": 12,
            "rollout.max_in_flight": 8, "rollout.flush_every": 5, "filters.min_tool_calls": 1})
        stats = run_rollouts(cfg)
        injected = Counter(server.faults_injected)
        requests = server.requests
    # The plan really injected every kind at about the configured rate.
    assert set(injected) == set(FAULT_KINDS), injected
    assert 0.05 < sum(injected.values()) / requests < 0.2, (injected, requests)

    assert stats.trajectories == stats.rows["trajectories"] == 40 and stats.status.get("error", 0) == 0
    assert_each_question_once(out, {q["question_id"] for q in qs})
    t = rows(out, "SELECT sum(retries) AS retries, sum(errors) AS errors, min(tokens_in) AS min_in, "
                  "min(tokens_out) AS min_out, sum(tokens_out) AS out FROM trajectories")[0]
    # Every transient fault cost exactly one recorded retry; every garbage reply one recorded parse error.
    assert t["retries"] == stats.retries == sum(injected[k] for k in TRANSIENT)
    assert t["errors"] == injected["garbage"]
    assert t["min_in"] > 0 and t["min_out"] > 0
    assert t["out"] == rows(out, "SELECT sum(tokens_out) AS n FROM turns WHERE role = 'assistant'")[0]["n"]
    assert rows(out, "SELECT count(*) AS n FROM turns WHERE parse_error IS NOT NULL")[0]["n"] == injected["garbage"]

    # The filter stage decides every trajectory: kept, or rejected with a stable snake_case reason.
    report = run_filters(cfg)
    kept = set(read_table(out, "kept", columns=["trajectory_id"]).column(0).to_pylist())
    rej = read_table(out, "rejects").to_pylist()
    rejected = {r["row_id"]: r["reason"] for r in rej if r["stage"] == "filter"}
    tids = set(read_table(out, "trajectories", columns=["trajectory_id"]).column(0).to_pylist())
    assert kept | set(rejected) == tids and not kept & set(rejected)
    assert all(reason and reason.replace("_", "").isalnum() and reason.islower() for reason in rejected.values())
    assert report.trajectories == 40 and report.kept + report.rejected == 40
    assert report.kept == len(kept) and report.rejects == dict(Counter(rejected.values()))
    assert kept, "the oracle answers correctly despite faults: some trajectories must be kept"
    print(f"\n[reliability] 10% faults ({protocol}): {requests} requests, injected {dict(injected)}; "
          f"40/40 trajectories written once, {t['retries']} retries, {t['errors']} parse errors recorded; "
          f"filters: {len(kept)} kept, {len(rejected)} rejected {dict(Counter(rejected.values()))}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, out: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-m", "hopforge.testing.scripted", "--port", str(port), "--policy",
                             "oracle", "--out", str(out), "--latency-ms", "15"], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"scripted server on port {port} did not start: {log.read_text()}")


def test_external_server_killed_and_restarted_mid_run_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    qs = many_questions(40)
    write_wiki(out, qs)
    port = _free_port()
    log = tmp_path / "server.log"
    proc = _start_server(port, out, log)
    # Backoff (full jitter, capped at 1 s) x 30 retries outlasts a few seconds of downtime.
    cfg = rollout_cfg(out, f"http://127.0.0.1:{port}", **{
        "rollout.retries": 30, "rollout.retry_base_s": 0.1, "rollout.retry_max_s": 1.0,
        "rollout.max_in_flight": 6, "rollout.flush_every": 4})
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(stats=run_rollouts(cfg)), daemon=True)
    try:
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once some trajectories are on disk and more are in flight
            if (out / "trajectories" / "_manifest.jsonl").exists() and \
                    read_table(out, "trajectories", columns=["trajectory_id"]).num_rows >= 8:
                break
            time.sleep(0.02)
        before = read_table(out, "trajectories", columns=["trajectory_id"]).num_rows
        assert 8 <= before < 40, "the run finished before the server could be killed: make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        time.sleep(1.5)  # down: requests in flight were reset, new ones are refused
        proc = _start_server(port, out, log)
        runner.join(120)
        assert not runner.is_alive(), "the run did not finish after the server came back"
    finally:
        proc.kill()
        proc.wait(10)
    stats = result["stats"]
    assert stats.status == {"answered": 40} and stats.rows["trajectories"] == 40
    assert stats.retries > 0  # the outage was ridden out by retries, not by luck
    assert_each_question_once(out, {q["question_id"] for q in qs})
    t = rows(out, "SELECT sum(retries) AS r, count(*) FILTER (WHERE final_answer IN ('Sella', 'Hanne Lind')) AS ok "
                  "FROM trajectories")[0]
    assert t == {"r": stats.retries, "ok": 40}
    print(f"\n[reliability] server kill/restart: 40/40 answered, {before} written before the kill, "
          f"{stats.retries} retries recorded")
