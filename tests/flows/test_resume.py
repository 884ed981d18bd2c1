"""Crash-resume: SIGKILL part-way through trajectory generation, re-run, compare.

Every rollout flush commits its ``turns`` and ``trajectories`` shards as one group
(``storage.write_group``) and every stage start runs ``storage.recover()``, so a kill at any
point leaves each trajectory either fully written or absent. The re-run skips finished batches by
their completion markers, rolls out exactly the trajectories that were not committed, and leaves
tables equal to an uninterrupted run's: same ids, no duplicates, none missing, same outcomes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from hopforge.config import load_config
from hopforge.rollouts import run_rollouts
from hopforge.stage import resolve
from hopforge.storage import read_manifest, read_table, recover, shard_paths, verify
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki

REPO = Path(__file__).resolve().parents[2]
COMPARED = ("pages", "links", "redirects", "nodes", "walks", "questions", "trajectories", "turns", "kept",
            "turn_labels", "rejects")
# What a trajectory's outcome is made of (not its timings).
OUTCOME = ["trajectory_id", "question_id", "attempt", "status", "final_answer", "num_turns", "num_tool_calls",
           "errors", "error"]
TURN = ["trajectory_id", "turn_index", "role", "content", "tool_name", "parse_error"]


def _sorted_rows(out: Path, table: str, columns: list[str]) -> list[dict]:
    return sorted(read_table(out, table, columns=columns).to_pylist(), key=lambda r: [str(r[c]) for c in columns])


def assert_same_rows(table_keys, expected_out: Path, out: Path) -> None:
    """Same ids in every table (no duplicates, none missing), and the same trajectory outcomes and turns."""
    for table in COMPARED:
        want, got = table_keys(expected_out, table), table_keys(out, table)
        dupes = {k: n for k, n in got.items() if n > want.get(k, 0)}
        assert not dupes, f"{table}: duplicated rows after resume, e.g. {list(dupes)[:3]}"
        missing = want - got
        assert not missing, f"{table}: rows missing after resume, e.g. {list(missing)[:3]}"
        assert got == want, table
    assert _sorted_rows(out, "trajectories", OUTCOME) == _sorted_rows(expected_out, "trajectories", OUTCOME)
    assert _sorted_rows(out, "turns", TURN) == _sorted_rows(expected_out, "turns", TURN)
    assert _sorted_rows(out, "kept", ["trajectory_id", "correct", "action_hash"]) == \
        _sorted_rows(expected_out, "kept", ["trajectory_id", "correct", "action_hash"])
    assert _sorted_rows(out, "turn_labels", ["trajectory_id", "turn_index", "loss_weight"]) == \
        _sorted_rows(expected_out, "turn_labels", ["trajectory_id", "turn_index", "loss_weight"])


def _rows(out: Path, table: str) -> int:
    return sum(e.rows for e in read_manifest(out, table))


@pytest.mark.slow
def test_sigkill_mid_rollouts_then_rerun_equals_uninterrupted_run(reference, prefect_harness: str, table_keys,
                                                                   hopforge_env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    config, ref_out, ref_summary, _ = reference
    n_ref = _rows(ref_out, "trajectories")
    ref = {s["stage"]: s for s in ref_summary["stages"]}
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
    assert not read_manifest(out, "kept"), "the filter stage ran before the kill"
    recover(out)  # what the re-run does first: a group the kill caught mid-commit becomes whole
    rollouts = resolve(load_config(config, {"run.out": str(out)}), "rollouts")
    finished = {orjson.loads(m.read_bytes())["batch"] for m in (rollouts.dir / "done").glob("*.json")}
    partial = _rows(out, "trajectories")
    in_finished = sum(e.rows for e in read_manifest(out, "trajectories") if e.batch in finished)
    assert 0 < partial < n_ref

    r = subprocess.run([*cmd, "--json", str(tmp_path / "summary.json")], env=env, capture_output=True,
                       text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    stages = {s["stage"]: s for s in summary["stages"]}
    # Complete before the kill: skipped by their completion markers, not executed again.
    for name in ("graph", "questions", "screen"):
        assert stages[name]["ran"] == 0 and stages[name]["skipped"] == stages[name]["tasks"], stages[name]
    # Rollouts: finished batches skipped; the others ran, rolling out exactly what was not committed.
    s = stages["rollouts"]
    assert s["tasks"] == ref["rollouts"]["tasks"]
    assert (s["skipped"], s["ran"]) == (len(finished), s["tasks"] - len(finished))
    assert s["stats"]["trajectories"] == n_ref - partial
    assert s["stats"]["resumed"] == partial - in_finished
    assert_same_rows(table_keys, ref_out, out)


# Run in a child process: SIGKILL itself right after linking the turns shard of a flush group, before the
# trajectories shard of the same group is linked (and before either is recorded in its manifest).
KILL_BETWEEN_TURNS_AND_TRAJECTORIES = """
import os, signal, sys
from pathlib import Path

import hopforge.storage.shards as shards
from hopforge.rollouts import run_rollouts
from tests.rollouts.rollout_fixtures import rollout_cfg

link = shards._link_next_part

def link_then_die_after_turns(run_dir, tmp):
    final = link(run_dir, tmp)
    if run_dir.parent.name == "turns":
        os.kill(os.getpid(), signal.SIGKILL)
    return final

shards._link_next_part = link_then_die_after_turns
run_rollouts(rollout_cfg(Path(sys.argv[1]), **{"rollout.flush_every": 2, "rollout.max_in_flight": 1}))
"""


def _questions(n: int) -> list[dict]:
    return [{**QUESTIONS[i % 2], "question_id": f"q{i:02d}", "question": f"{QUESTIONS[i % 2]['question']} ({i})"}
            for i in range(n)]


def test_kill_between_the_turns_and_trajectories_shards_of_a_flush_is_recovered_whole(tmp_path: Path) -> None:
    qs = _questions(6)
    over = {"rollout.flush_every": 2, "rollout.max_in_flight": 1}
    whole = tmp_path / "whole"
    whole_stats = run_rollouts(write_wiki(whole, qs, rollout_cfg(whole, **over)))
    assert whole_stats.status == {"answered": 6}

    out = tmp_path / "killed"
    cfg = write_wiki(out, qs, rollout_cfg(out, **over))
    r = subprocess.run([sys.executable, "-c", KILL_BETWEEN_TURNS_AND_TRAJECTORIES, str(out)], capture_output=True,
                       text=True, timeout=300, cwd=REPO, check=False,
                       env={**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"})
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    # The kill landed in the window: the first flush's turns shard is linked but recorded nowhere, its
    # trajectories shard is not linked, and the group's journal is still there.
    assert [p.name for p in (out / "_journal").glob("*.json")] != []
    assert len(verify(out, "turns").unrecorded) == 1 and not read_manifest(out, "turns")
    assert shard_paths(out, "trajectories") == [] and not read_manifest(out, "trajectories")

    stats = run_rollouts(cfg)  # the re-run: recover() finishes the group, the batch resumes after it
    assert not list((out / "_journal").glob("*.json"))
    assert (stats.resumed, stats.trajectories, stats.status) == (2, 4, {"answered": 4})
    assert stats.rows == {"trajectories": 4}
    trajectories = read_table(out, "trajectories", columns=["trajectory_id"]).column(0).to_pylist()
    assert Counter(trajectories) == Counter({t: 1 for t in trajectories}) and len(trajectories) == 6
    turns = read_table(out, "turns", columns=["trajectory_id", "turn_index"]).to_pylist()
    assert max(Counter((t["trajectory_id"], t["turn_index"]) for t in turns).values()) == 1
    for table in ("turns", "trajectories"):
        assert verify(out, table).clean, table
    assert _sorted_rows(out, "trajectories", OUTCOME) == _sorted_rows(whole, "trajectories", OUTCOME)
    assert _sorted_rows(out, "turns", TURN) == _sorted_rows(whole, "turns", TURN)
