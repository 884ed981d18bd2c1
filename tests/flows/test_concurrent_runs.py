"""Two runs on one OUT: one writer per stage (``OUT/_leases/<stage>.lock``), so every trajectory is
written once; the process that finds a stage held exits 75 with one line naming the holder, or,
with ``--wait``, waits and then skips what the other finished. A cron tick that overlaps a long
run ends skipped with the holder's line instead of failing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from hopforge.config import load_config
from hopforge.stage import STAGES
from hopforge.storage import query_arrow, read_table
from hopforge.testing.scripted import OraclePolicy, ScriptedServer
from tests.flows.conftest import copy_out, shard_paths_by_table
from tests.rollouts.rollout_fixtures import QUESTIONS, write_wiki

REPO = Path(__file__).resolve().parents[2]


def assert_each_trajectory_once(out: Path, n: int) -> None:
    """Counted in the raw shards (no deduplication) and in the catalog's ``trajectories_all``."""
    raw = Counter(read_table(out, "trajectories", columns=["trajectory_id"]).column(0).to_pylist())
    assert len(raw) == n and set(raw.values()) == {1}, raw.most_common(3)
    per_id = query_arrow(out, "SELECT trajectory_id, count(*) AS n FROM trajectories_all GROUP BY 1").to_pylist()
    assert len(per_id) == n and {r["n"] for r in per_id} == {1}
    turns = read_table(out, "turns", columns=["trajectory_id", "turn_index"]).to_pylist()
    turns = Counter((t["trajectory_id"], t["turn_index"]) for t in turns)
    assert turns and max(turns.values()) == 1


def held_line(stage: str, out: Path, pid: int, owner: str) -> re.Pattern[str]:
    """The one line a process prints when ``owner`` (process ``pid`` on this host) holds ``stage`` on ``out``."""
    host = socket.gethostname()
    return re.compile(rf"^error: {stage} on {re.escape(str(out))} is held by '{re.escape(owner)}' \(pid {pid} on "
                      rf"host {re.escape(host)}, since \S+, heartbeat \d+ s ago\); wait for it or pass --wait$")


def hopforge_owner(what: str, pid: int) -> str:
    """How a hopforge command names itself as a lease holder."""
    return f"{what} (pid {pid} on {socket.gethostname()})"


def _start_together(cmds: list[list[str]], env: dict[str, str], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(c, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return [*done, *procs]  # results first, then the Popen objects (for their pids)


# ---------------------------------------------------------------- hopforge generate x 2


@pytest.fixture
def generate_setup(tmp_path: Path, hopforge_env: dict[str, str]):
    """A fixture wiki of 30 questions, complete up to the screen, and a slow shared scripted teacher."""
    qs = [{**QUESTIONS[i % 2], "question_id": f"q{i:02d}", "question": f"{QUESTIONS[i % 2]['question']} ({i})"}
          for i in range(30)]
    out = tmp_path / "data"
    # 0.08 s a reply, 2 in flight: the winner holds the lease for seconds, far longer than the two
    # processes' start-up skew, so the second always finds it held.
    with ScriptedServer(OraclePolicy(qs), latency_s=0.08) as server:
        config = tmp_path / "generate.toml"
        config.write_text(f'[run]\nout = "{out}"\n[graph]\ndump = "fixture-wiki.xml"\n'
                          f'[teacher]\nbackend = "scripted"\nmodel = "scripted"\nbase_url = "{server.url}"\n'
                          "[rollout]\nmax_in_flight = 2\nflush_every = 4\nretry_base_s = 0.01\n")
        write_wiki(out, qs, load_config(config))
        cmd = [sys.executable, "-m", "hopforge.cli", "generate", "--config", str(config), "--teacher", "scripted",
               "--no-progress"]
        yield out, cmd, {**hopforge_env, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}


def test_two_generate_processes_write_each_trajectory_once_and_the_loser_names_the_holder(
        generate_setup, tmp_path: Path) -> None:
    out, cmd, env = generate_setup
    a, b, pa, pb = _start_together([cmd, cmd], env, tmp_path)
    assert sorted([a.returncode, b.returncode]) == [0, 75], (a.stderr[-2000:], b.stderr[-2000:])
    (winner, pw), (loser, _) = sorted([(a, pa), (b, pb)], key=lambda x: x[0].returncode)
    assert json.loads(winner.stdout)["trajectories"] == 30
    assert loser.stdout == ""
    [line] = loser.stderr.splitlines()  # one line, no traceback
    assert held_line("rollouts", out, pw.pid, hopforge_owner("hopforge generate", pw.pid)).match(line), line
    assert_each_trajectory_once(out, 30)


def test_two_generate_processes_with_wait_the_second_finishes_and_reports_skipped(
        generate_setup, tmp_path: Path) -> None:
    out, cmd, env = generate_setup
    a, b, *_ = _start_together([[*cmd, "--wait"], [*cmd, "--wait"]], env, tmp_path)
    assert (a.returncode, b.returncode) == (0, 0), (a.stderr[-2000:], b.stderr[-2000:])
    ran, waited = sorted((json.loads(a.stdout), json.loads(b.stdout)), key=lambda s: s["skipped"])
    assert (ran["skipped"], ran["trajectories"], ran["batches_skipped"]) == (False, 30, 0)
    assert waited["skipped"] and waited["batches_skipped"] == waited["batches"] == ran["batches"] > 0
    assert waited["trajectories"] == 0 and waited["rows"] == {}
    assert_each_trajectory_once(out, 30)


# ---------------------------------------------------------------- hopforge run x 2


def _run_pair(tmp_path: Path, config: Path, out: Path, env: dict[str, str], *extra: str):
    cmds = [[sys.executable, "-m", "hopforge.cli", "run", "--config", str(config), "--out", str(out), *extra,
             "--json", str(tmp_path / f"summary-{i}.json")] for i in range(2)]
    a, b, pa, pb = _start_together(cmds, env, tmp_path)
    summaries = [json.loads((tmp_path / f"summary-{i}.json").read_text()) for i in range(2)]
    return [(a, pa, summaries[0]), (b, pb, summaries[1])]


@pytest.fixture
def run_setup(pipeline_config, enwiki_233_module: Path, prefect_harness: str, hopforge_env: dict[str, str],
              tmp_path: Path):
    config = pipeline_config(tmp_path / "pipeline.toml", enwiki_233_module, graph={"batch_pages": 256},
                             synth={"n_questions": 80, "batch_size": 20})
    return config, tmp_path / "data", {**hopforge_env, "PREFECT_API_URL": prefect_harness, "COLUMNS": "250"}


@pytest.mark.slow
def test_two_hopforge_runs_started_together_one_exits_75_naming_the_holder(run_setup, tmp_path: Path) -> None:
    config, out, env = run_setup
    runs = _run_pair(tmp_path, config, out, env)
    assert sorted(r.returncode for r, _, _ in runs) == [0, 75], [r.stderr[-2000:] for r, _, _ in runs]
    (_, pw, won), (loser, _, lost) = sorted(runs, key=lambda x: x[0].returncode)
    assert won["ok"] and won["held"] is None and [s["stage"] for s in won["stages"]] == list(STAGES)
    [line] = loser.stderr.splitlines()  # one line, no traceback
    m = held_line(r"(\w+)", out, pw.pid, hopforge_owner("hopforge flow", pw.pid)).match(line)
    assert m, line
    held_stage = m.group(1)
    assert lost["held"] == line.removeprefix("error: ") and not lost["ok"] and not lost["failures"]
    assert lost["skipped_stages"] == list(STAGES[STAGES.index(held_stage):])
    # What the loser did before it found a stage held, the winner skipped: each stage ran once.
    for name in STAGES:
        done = [s for _, _, summ in runs for s in summ["stages"] if s["stage"] == name and s["ran"]]
        assert len(done) == 1, name
    assert_each_trajectory_once(out, won["funnel"]["rows"]["trajectories"]["run"])
    assert won["funnel"]["rows"]["trajectories"]["run"] > 0


@pytest.mark.slow
def test_two_hopforge_runs_with_wait_both_finish_and_each_stage_runs_once(run_setup, tmp_path: Path) -> None:
    config, out, env = run_setup
    runs = _run_pair(tmp_path, config, out, env, "--wait")
    assert [r.returncode for r, _, _ in runs] == [0, 0], [r.stderr[-2000:] for r, _, _ in runs]
    for name in STAGES:  # whoever took the stage's lease first ran it; the other waited, then skipped it
        a, b = ({s["stage"]: s for s in summ["stages"]}[name] for _, _, summ in runs)
        ran, skipped = sorted((a, b), key=lambda s: s["ran"], reverse=True)
        assert ran["ran"] == ran["tasks"] > 0 and ran["skipped"] == 0, ran
        assert skipped["ran"] == 0 and skipped["skipped"] == skipped["tasks"] == ran["tasks"], skipped
    n = runs[0][2]["funnel"]["rows"]["trajectories"]["run"]
    assert n > 0 and all(summ["ok"] for _, _, summ in runs)
    assert_each_trajectory_once(out, n)


# ---------------------------------------------------------------- a cron tick overlapping a long run

HOLD = """
import sys, time
from hopforge.storage import Lease

with Lease(sys.argv[1], "rollouts", owner="nightly hopforge run").acquire():
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_cron_tick_overlapping_a_long_run_is_skipped_with_the_holders_line(
        reference, prefect_harness: str, hopforge_env: dict[str, str], tmp_path: Path) -> None:
    from hopforge.flows import pipeline

    config, ref_out, _, _ = reference
    out = copy_out(ref_out, tmp_path / "data")
    before = shard_paths_by_table(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=hopforge_env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        summary = pipeline(str(config), {"run.out": str(out)})  # what a scheduled run calls: no exception
        took = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait(10)
    assert held_line("rollouts", out, holder.pid, "nightly hopforge run").match(f"error: {summary['held']}")
    assert not summary["ok"] and not summary["failures"]
    assert [(s["stage"], s["ran"], s["skipped"] == s["tasks"]) for s in summary["stages"]] == [
        ("graph", 0, True), ("questions", 0, True), ("screen", 0, True)]
    assert summary["skipped_stages"] == ["rollouts", "filters", "labels", "publish"]
    assert shard_paths_by_table(out) == before
    assert took < 120  # it did not wait for the holder
