"""The rollout stage (src/hopforge/rollouts/stage.py): what it reads (its chain's questions minus the
screen's rejects), its fingerprint (teacher settings make new partitions, execution settings do
not), skipping a complete run, batches, resume after kill -9, and empty input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from hopforge.filters import run_filters
from hopforge.rollouts import RolloutStage, run_rollouts
from hopforge.rollouts.engine import trajectory_id
from hopforge.stage import StageError, resolve, selection_for
from hopforge.storage import query_arrow, read_manifest, read_table, recover
from hopforge.testing.scripted import OraclePolicy, ScriptedRequest, ScriptedServer
from hopforge.testing.stages import complete_stage
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki

SRC = Path(__file__).resolve().parents[2] / "src"


class Recording(OraclePolicy):
    """The oracle, recording each request's question and sampling temperature."""

    def __init__(self, questions=QUESTIONS) -> None:
        super().__init__(questions)
        self.asked: Counter[str] = Counter()
        self.temperatures: set[float] = set()

    def __call__(self, req: ScriptedRequest):
        self.asked[req.question] += 1
        self.temperatures.add(req.body.get("temperature"))
        return super().__call__(req)


def question_text(qid: str) -> str:
    return next(q["question"] for q in QUESTIONS if q["question_id"] == qid)


def shard_digests(out: Path, table: str, run: str) -> dict[str, str]:
    return {e.path: e.sha256 for e in read_manifest(out, table) if e.run == run}


# ----------------------------------------------------------------------------- inputs


def test_the_stage_needs_graph_questions_and_screen_of_the_same_config(tmp_path: Path) -> None:
    out = tmp_path / "out"
    policy = Recording()
    with ScriptedServer(policy) as server:
        with pytest.raises(StageError, match=r"needs the output of stage 'graph' .* run `hopforge ingest`"):
            run_rollouts(rollout_cfg(out, server.url))
        write_wiki(out, screen=False)  # graph and questions complete, the screen never ran
        with pytest.raises(StageError, match=r"needs the output of stage 'screen' .* run `hopforge screen`"):
            run_rollouts(rollout_cfg(out, server.url))
        # Another config's chain is not this one's: the run id is part of every fingerprint.
        write_wiki(out)
        with pytest.raises(StageError, match="needs the output of stage 'graph'"):
            run_rollouts(rollout_cfg(out, server.url, **{"run.run_id": "other"}))
    assert server.requests == 0 and read_table(out, "trajectories").num_rows == 0


def test_rolls_out_the_questions_of_its_chain_that_passed_and_were_not_screened_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    failed = {**QUESTIONS[0], "question_id": "q-failed", "question": "Which failed question is this?", "passed": False}
    cfg = write_wiki(out, [*QUESTIONS, failed], screen=False)
    complete_stage(cfg, "screen", {"rejects": [{"stage": "screen", "step": "decontaminate",
                                                "reason": "benchmark_overlap", "row_table": "questions",
                                                "row_id": "q-inject", "detail": "test"}]})
    # A second chain in the same OUT (another run id) with its own question: never read by this one.
    other = write_wiki(out, [{**QUESTIONS[0], "question_id": "q-other", "question": "Which other question?"}],
                       cfg=rollout_cfg(out, **{"run.run_id": "other"}))
    assert resolve(other, "questions").fingerprint != resolve(cfg, "questions").fingerprint
    policy = Recording()
    with ScriptedServer(policy) as server:
        stats = run_rollouts(rollout_cfg(out, server.url))
    assert set(policy.asked) == {question_text("q-river"), question_text("q-founder")}
    assert stats.trajectories == 2 and stats.status == {"answered": 2} and server.requests == 7 + 5
    got = read_table(out, "trajectories", run=resolve(cfg, "rollouts").fingerprint, columns=["question_id"])
    assert sorted(got.column(0).to_pylist()) == ["q-founder", "q-river"]
    assert read_table(out, "trajectories").num_rows == 2  # nothing written for the other chain


def test_a_rerun_of_a_complete_stage_skips_every_batch_with_zero_counts(wiki: Path) -> None:
    policy = Recording()
    with ScriptedServer(policy) as server:
        cfg = rollout_cfg(wiki, server.url, **{"rollout.batch_questions": 2})
        first = run_rollouts(cfg)
        n = server.requests
        digests = shard_digests(wiki, "trajectories", resolve(cfg, "rollouts").fingerprint)
        again = run_rollouts(cfg)
        # Execution settings are not part of the fingerprint: still complete, nothing re-run.
        faster = run_rollouts(rollout_cfg(wiki, server.url, **{"rollout.batch_questions": 2,
                                                                "rollout.max_in_flight": 3,
                                                                "rollout.flush_every": 7}))
        assert server.requests == n == 15
    assert first.batches == 2 and first.batches_skipped == 0 and first.trajectories == 3
    for s in (again, faster):
        assert s.batches == s.batches_skipped == 2 and s.skipped
        assert (s.trajectories, s.turns, s.tokens, s.resumed, s.rows, s.status) == (0, 0, 0, 0, {}, {})
    assert shard_digests(wiki, "trajectories", resolve(cfg, "rollouts").fingerprint) == digests


def test_changing_the_teacher_temperature_rolls_out_again_beside_the_old_trajectories(wiki: Path) -> None:
    policy = Recording()
    with ScriptedServer(policy) as server:
        old_cfg = rollout_cfg(wiki, server.url, **{"teacher.temperature": 0.7})
        run_rollouts(old_cfg)
        old = resolve(old_cfg, "rollouts").fingerprint
        old_rows = read_table(wiki, "trajectories", run=old)
        old_turns = shard_digests(wiki, "turns", old)
        assert policy.temperatures == {0.7}
        policy.temperatures.clear()
        new_cfg = rollout_cfg(wiki, server.url, **{"teacher.temperature": 0.2})
        stats = run_rollouts(new_cfg)
    new = resolve(new_cfg, "rollouts").fingerprint
    assert new != old and new.startswith("rollouts-")
    # The temperature is not upstream of the screen: the same graph, questions and screen are read.
    assert resolve(new_cfg, "rollouts").inputs == resolve(old_cfg, "rollouts").inputs
    assert stats.batches_skipped == 0 and stats.trajectories == 3 and policy.temperatures == {0.2}
    by_run = {r["run"]: r["n"] for r in query_arrow(
        wiki, "SELECT run, count(*) AS n FROM trajectories_all GROUP BY run").to_pylist()}
    assert by_run == {old: 3, new: 3}
    # The old partition is untouched and still readable.
    assert read_table(wiki, "trajectories", run=old).equals(old_rows)
    assert shard_digests(wiki, "turns", old) == old_turns
    # A reader of the new config's chain sees only the new trajectories.
    sel = selection_for(resolve(new_cfg, "rollouts"))
    assert query_arrow(wiki, "SELECT DISTINCT run FROM trajectories", selection=sel).to_pylist() == [{"run": new}]


def test_attempts_are_planned_in_batches_with_stable_ids_and_distinct_trajectories(wiki: Path) -> None:
    cfg = rollout_cfg(wiki, **{"rollout.attempts_per_question": 2, "rollout.batch_questions": 2})
    run = resolve(cfg, "rollouts")
    batches = RolloutStage().plan(run)
    assert [b.payload for b in batches] == [(("q-river", 0), ("q-river", 1)), (("q-founder", 0), ("q-founder", 1)),
                                            (("q-inject", 0), ("q-inject", 1))]
    assert [b.id for b in RolloutStage().plan(run)] == [b.id for b in batches]  # ids survive a re-plan
    stats = run_rollouts(cfg)
    assert stats.batches == 3 and stats.trajectories == 6
    ids = read_table(wiki, "trajectories", columns=["trajectory_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == 6
    for b in batches:  # every batch's shards carry its id: what a resumed batch reads back
        mine = read_table(wiki, "trajectories", run=run.fingerprint, batch=b.id, columns=["trajectory_id"])
        assert sorted(mine.column(0).to_pylist()) == sorted(trajectory_id(q, a, "scripted", 0, run.fingerprint)
                                                           for q, a in b.payload)


def test_no_question_to_roll_out_completes_empty_and_the_filter_stage_skips_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = write_wiki(out, screen=False)
    complete_stage(cfg, "screen", {"rejects": [{"stage": "screen", "step": "near_duplicate_question",
                                                "reason": "near_duplicate_question", "row_table": "questions",
                                                "row_id": q["question_id"], "detail": "test"} for q in QUESTIONS]})
    policy = Recording()
    with ScriptedServer(policy) as server:
        stats = run_rollouts(rollout_cfg(out, server.url))
    reason = "0 of 3 questions passed their checks and the screen: nothing to roll out"
    assert stats.empty == reason and stats.batches == 0 and server.requests == 0
    assert resolve(cfg, "rollouts").complete()["empty"] == reason
    assert run_filters(cfg).empty == reason


# ----------------------------------------------------------------------------- resume


def many_questions(n: int) -> list[dict]:
    return [{**QUESTIONS[i % 2], "question_id": f"q{i:03d}", "question": f"{QUESTIONS[i % 2]['question']} (v{i})"}
            for i in range(n)]


def test_kill_9_mid_batch_resumes_only_that_batch_and_writes_every_trajectory_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    n = 30
    qs = many_questions(n)
    write_wiki(out, qs)
    over = {"rollout.max_in_flight": 4, "rollout.flush_every": 1, "rollout.batch_questions": 10}
    cfg = rollout_cfg(out, **over)
    run = resolve(cfg, "rollouts")
    with ScriptedServer(OraclePolicy(qs), latency_s=0.03) as server:
        code = ("import sys; from hopforge.rollouts import run_rollouts; "
                "from tests.rollouts.rollout_fixtures import rollout_cfg; "
                f"run_rollouts(rollout_cfg(sys.argv[1], sys.argv[2], **{over!r}))")
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{SRC.parent}"}
        proc = subprocess.Popen([sys.executable, "-c", code, str(out), server.url], env=env,
                                cwd=SRC.parent, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        try:
            # Past the first batch and into the second: one batch done, one partly committed.
            while time.monotonic() < deadline:
                if (out / "trajectories" / "_manifest.jsonl").exists() and \
                        len(read_table(out, "trajectories", columns=["trajectory_id"])) >= 14:
                    break
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        # A kill inside a group commit leaves a journal: recover() (which every stage run starts with)
        # makes that flush wholly visible, so count what is committed after it.
        recover(out)
        before = read_table(out, "trajectories", run=run.fingerprint, columns=["trajectory_id"]).column(0).to_pylist()
        assert 14 <= len(before) < n
        batches = RolloutStage().plan(run)
        done = [b for b in batches if run.is_done(b)]
        committed = {b.id: read_table(out, "trajectories", run=run.fingerprint, batch=b.id, columns=[]).num_rows
                     for b in batches}
        partial = sum(committed[b.id] for b in batches if not run.is_done(b))
        assert done and all(committed[b.id] == 10 for b in done)
        stats = run_rollouts(rollout_cfg(out, server.url, **over))
    # Finished batches are skipped by their markers; an unfinished one reads back only its own
    # trajectories (not the whole table) and rolls out the rest.
    assert stats.batches == 3 and stats.batches_skipped == len(done)
    assert stats.resumed == partial and stats.trajectories == n - len(before)
    ids = read_table(out, "trajectories", columns=["trajectory_id"]).column(0).to_pylist()
    assert len(ids) == len(set(ids)) == n
    per = Counter(zip(*[read_table(out, "turns", columns=[c]).column(0).to_pylist()
                        for c in ("trajectory_id", "turn_index")], strict=True))
    assert max(per.values()) == 1  # group commits: no turn written twice, none without its trajectory
    assert set(read_table(out, "turns", columns=["trajectory_id"]).column(0).to_pylist()) == set(ids)
    assert query_arrow(out, "SELECT count(*) AS n FROM trajectories WHERE status = 'answered'")["n"].to_pylist() == [n]


def test_progress_sees_the_live_counters_of_each_batch(wiki: Path) -> None:
    seen: list[tuple[int, int]] = []
    stats = run_rollouts(rollout_cfg(wiki, **{"rollout.batch_questions": 2}),
                         progress=lambda live: seen.append((live.trajectories, live.turns)))
    # One LiveStats per batch, reported at least once at its end: 2 then 1 trajectories.
    assert stats.batches == 2 and (2, 7 + 5) in seen and (1, 3) in seen
    assert max(t for t, _ in seen) == 2
