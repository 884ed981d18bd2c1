"""Crash-resume: SIGKILL `hopforge run` part-way through trajectory generation, re-run, compare.

The re-run must finish only what was missing (finished tasks replay from the
persisted cache) and leave tables equal to an uninterrupted run's: same ids,
no duplicates, none missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hopforge.storage import read_manifest, read_table

COMPARED = ("pages", "links", "redirects", "nodes", "walks", "questions", "trajectories", "turns", "kept",
            "turn_labels", "rejects")


# Tables whose rows follow from a trajectory's outcome (filters, labels), not from its turns.
_OUTCOME_TABLES = ("kept", "turn_labels", "rejects")


def interrupted_ids(out: Path) -> set[str]:
    """Trajectories the kill caught between their turns shard and their trajectory row.

    The rollout stage closes these on resume as status "error" (rollout.INTERRUPTED) rather than
    writing their turns twice: the documented loss of a kill -9 (trajectories in flight).
    """
    from hopforge.rollouts.engine import INTERRUPTED

    rows = read_table(out, "trajectories", columns=["trajectory_id", "status", "error"]).to_pylist()
    found = {r["trajectory_id"] for r in rows if r["error"] == INTERRUPTED}
    assert all(r["status"] == "error" for r in rows if r["trajectory_id"] in found)
    return found


def assert_same_rows(table_keys, expected_out: Path, out: Path, *, interrupted: frozenset[str] = frozenset()) -> None:
    """Same ids, no duplicates, none missing; ``interrupted`` trajectories keep their ids and turns but
    may differ in outcome (status, and so kept / labels / filter rejects)."""
    def drop(keys):
        return type(keys)({k: n for k, n in keys.items() if not interrupted.intersection(map(str, k))})

    for table in COMPARED:
        want, got = table_keys(expected_out, table), table_keys(out, table)
        if table in _OUTCOME_TABLES:
            want, got = drop(want), drop(got)
        dupes = {k: n for k, n in got.items() if n > want.get(k, 0)}
        assert not dupes, f"{table}: duplicated rows after resume, e.g. {list(dupes)[:3]}"
        missing = want - got
        assert not missing, f"{table}: rows missing after resume, e.g. {list(missing)[:3]}"
        assert got == want, table
    a = read_table(expected_out, "trajectories", columns=["trajectory_id", "status", "final_answer"]).to_pylist()
    b = read_table(out, "trajectories", columns=["trajectory_id", "status", "final_answer"]).to_pylist()
    key = lambda r: r["trajectory_id"]  # noqa: E731
    assert sorted((r for r in a if r["trajectory_id"] not in interrupted), key=key) == \
        sorted((r for r in b if r["trajectory_id"] not in interrupted), key=key)


def _rows(out: Path, table: str) -> int:
    return sum(e.rows for e in read_manifest(out, table))


@pytest.mark.slow
def test_sigkill_mid_rollouts_then_rerun_equals_uninterrupted_run(reference, prefect_harness: str, table_keys,
                                                                   hopforge_env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    config, ref_out, ref_summary, _ = reference
    n_ref = _rows(ref_out, "trajectories")
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "hopforge.cli", "run", "--config", str(config), "--out", str(out)]
    env = {**hopforge_env, "PREFECT_API_URL": prefect_harness}
    log = open(tmp_path / "killed.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while True:
            assert proc.poll() is None, "the run finished before it could be killed:\n" + \
                (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "rollouts never started"
            if 0 < _rows(out, "trajectories") < n_ref:
                break
            time.sleep(0.02)
    finally:
        # The whole process group: the flow process and its ephemeral/teacher children.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()
    partial = _rows(out, "trajectories")
    assert 0 < partial < n_ref
    assert not read_manifest(out, "kept"), "the filter stage ran before the kill"

    r = subprocess.run([*cmd, "--json", str(tmp_path / "summary.json")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    stages = {s["stage"]: s for s in summary["stages"]}
    # Finished before the kill: replayed from the persisted results, not executed again.
    for name in ("build_graph", "compose_questions"):
        assert stages[name]["ran"] == 0 and stages[name]["cached"] == stages[name]["tasks"], stages[name]
    # Only the rollout batches not yet written were planned and run.
    ref_batches = {s["stage"]: s for s in ref_summary["stages"]}["generate_trajectories"]["tasks"]
    assert 0 < stages["generate_trajectories"]["tasks"] < ref_batches
    assert stages["generate_trajectories"]["stats"]["roll_out"]["trajectories"] <= n_ref - partial + 2

    # Usually empty; non-empty when the kill fell between a flush's turns shard and its trajectories shard.
    interrupted = interrupted_ids(out)
    assert len(interrupted) < n_ref - partial + 1
    assert_same_rows(table_keys, ref_out, out, interrupted=frozenset(outcome_dependents(ref_out, out, interrupted)))


def outcome_dependents(ref_out: Path, out: Path, interrupted: set[str]) -> set[str]:
    """``interrupted`` plus the trajectories whose filter outcome can change with theirs: other attempts
    at the same questions, and trajectories with the same action sequence (the duplicate filter keeps
    the first of those it sees)."""
    if not interrupted:
        return set()
    traj = read_table(out, "trajectories", columns=["trajectory_id", "question_id"]).to_pylist()
    questions = {r["question_id"] for r in traj if r["trajectory_id"] in interrupted}
    hashes = {r["action_hash"] for r in read_table(ref_out, "kept", columns=["trajectory_id", "action_hash"])
              .to_pylist() if r["trajectory_id"] in interrupted}
    same_actions = {r["trajectory_id"] for r in read_table(out, "kept", columns=["trajectory_id", "action_hash"])
                    .to_pylist() if r["action_hash"] in hashes}
    return interrupted | same_actions | {r["trajectory_id"] for r in traj if r["question_id"] in questions}
