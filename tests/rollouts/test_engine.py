"""The rollout engine end to end against the scripted server (through the rollout stage): correct
oracle trajectories, both protocols, faults, limits, context folding; the flush sink's group
commits; a managed server restarted mid-run. Stage behaviour (fingerprints, resume, screen,
kill -9) is in test_stage.py."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from hopforge.llm.client import LeanTransport, Retry, Teacher
from hopforge.rollouts import run_rollouts
from hopforge.rollouts.engine import LiveStats, RolloutEngine, TrajectorySink, trajectory_id
from hopforge.rollouts.environment import Environment
from hopforge.rollouts.protocol import ChatProtocol, TextProtocol
from hopforge.stage import resolve
from hopforge.storage import content_id, query_arrow
from hopforge.testing.scripted import FaultPlan, LoopPolicy, OraclePolicy, Reply, ScriptedServer, ScriptPolicy
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki


def oracle() -> OraclePolicy:
    return OraclePolicy(QUESTIONS)


def rows(out: Path, sql: str) -> list[dict]:
    return query_arrow(out, sql).to_pylist()


@pytest.mark.parametrize("protocol", ["chat", "text"])
def test_oracle_trajectories_are_correct_and_fully_recorded(wiki: Path, protocol: str) -> None:
    cfg = rollout_cfg(wiki, **{"teacher.protocol": protocol})
    stats = run_rollouts(cfg)  # scripted backend, in-process oracle over the questions table
    assert stats.trajectories == 3 and stats.status == {"answered": 3} and stats.rows == {"trajectories": 3}
    assert stats.batches == 1 and stats.batches_skipped == 0 and stats.resumed == 0 and stats.errors == 0
    assert stats.turns == 7 + 5 + 3  # assistant turns: 2 per hop + the answer
    traj = {r["question_id"]: r for r in rows(wiki, "SELECT * FROM trajectories")}
    assert {r["run"] for r in traj.values()} == {resolve(cfg, "rollouts").fingerprint}
    assert traj["q-river"]["final_answer"] == "Sella" and traj["q-founder"]["final_answer"] == "Hanne Lind"
    assert traj["q-river"]["num_turns"] == 7 and traj["q-river"]["num_tool_calls"] == 7
    assert traj["q-river"]["trajectory_id"] == content_id("q-river", 0, "scripted", 0, resolve(cfg, "rollouts").fingerprint)
    turns = rows(wiki, "SELECT * FROM turns WHERE question_id = 'q-river' ORDER BY turn_index")
    assert [t["role"] for t in turns[:4]] == ["system", "user", "assistant", "tool"]
    assert [t["tool_name"] for t in turns if t["role"] == "assistant"] == [
        "search", "visit", "search", "visit", "search", "visit", "answer"]
    visit = turns[4]
    assert visit["tool_args"]["title"] == "Veloria" and visit["tool_args"]["page"] == 0
    assert turns[5]["content"].startswith("Page: Veloria") and turns[5]["role"] == "tool"
    assert all(t["tokens_out"] > 0 and t["latency_ms"] >= 0 for t in turns if t["role"] == "assistant")
    if protocol == "text":
        assert turns[2]["raw_output"].endswith("Action: search[Veloria]")
        assert turns[2]["reasoning"] == "Step 1: find Veloria."


def test_page_text_never_triggers_an_action(wiki: Path) -> None:
    # The injected page contains "Action: answer[pwned]" and a hermes <tool_call>; the oracle visits it.
    for protocol in ("chat", "text"):
        out = wiki.parent / protocol
        write_wiki(out)
        run_rollouts(rollout_cfg(out, **{"teacher.protocol": protocol}))
        t = rows(out, "SELECT status, final_answer FROM trajectories WHERE question_id = 'q-inject'")[0]
        assert t == {"status": "answered", "final_answer": "nothing"}
        assert rows(out, "SELECT count(*) AS n FROM turns WHERE tool_args.text = 'pwned'")[0]["n"] == 0


def test_faults_are_survived_and_recorded(wiki: Path) -> None:
    plan = FaultPlan(schedule={1: "http_500", 3: "drop", 5: "garbage", 7: "truncated_json", 9: "timeout",
                               12: "garbage", 14: "http_500"}, hang_s=3.0)
    with ScriptedServer(oracle(), faults=plan) as server:
        cfg = rollout_cfg(wiki, server.url, **{"rollout.request_timeout_s": 0.5, "rollout.retries": 8})
        stats = run_rollouts(cfg)
        injected = dict(server.faults_injected)
    assert stats.trajectories == 3 and stats.status == {"answered": 3}
    assert injected == {"http_500": 2, "drop": 1, "garbage": 2, "truncated_json": 1, "timeout": 1}
    transient = sum(v for k, v in injected.items() if k != "garbage")
    traj = rows(wiki, "SELECT sum(retries) AS r, sum(errors) AS e FROM trajectories")[0]
    assert traj["r"] == transient == stats.retries  # every transient fault cost exactly one retry
    errs = rows(wiki, "SELECT parse_error FROM turns WHERE parse_error IS NOT NULL")
    assert len(errs) == injected["garbage"] == traj["e"] == stats.errors
    assert all(e["parse_error"].startswith("serch: arguments are not valid JSON") for e in errs)
    obs = rows(wiki, "SELECT content FROM turns WHERE role = 'tool' AND error IS NOT NULL")
    assert len(obs) == injected["garbage"] and obs[0]["content"].startswith("Error: serch")
    # garbage turns cost a turn each, so the oracle (counting assistant turns) re-plays from the wrong step;
    # what matters here: no crash, every trajectory finished and was written once.
    assert rows(wiki, "SELECT count(DISTINCT trajectory_id) AS n, count(*) AS m FROM trajectories")[0] == {"n": 3, "m": 3}


def test_unrecoverable_teacher_errors_end_the_trajectory_with_status_error(wiki: Path) -> None:
    with ScriptedServer(oracle(), faults=FaultPlan(rate=1.0, kinds=("http_500",))) as server:
        stats = run_rollouts(rollout_cfg(wiki, server.url, **{"rollout.retries": 1}))
    assert stats.status == {"error": 3} and stats.errors == 3 and stats.rows == {"trajectories": 3}
    t = rows(wiki, "SELECT status, error, retries, num_turns FROM trajectories")
    assert all(r["status"] == "error" and "HTTP 500" in r["error"] and r["retries"] == 0 for r in t)
    assert all(r["num_turns"] == 0 for r in t)


def test_turn_limit_and_token_budget(wiki: Path) -> None:
    with ScriptedServer(LoopPolicy(1000, titles=["Long page"])) as server:
        stats = run_rollouts(rollout_cfg(wiki, server.url, **{"rollout.max_turns": 5,
                                                                "teacher.context_tokens": 100_000}))
        assert stats.status == {"turn_limit": 3}
        assert {r["num_turns"] for r in rows(wiki, "SELECT num_turns FROM trajectories")} == {5}
        out2 = wiki.parent / "budget"
        write_wiki(out2)
        stats = run_rollouts(rollout_cfg(out2, server.url, **{"rollout.token_budget": 1500,
                                                                "teacher.context_tokens": 100_000}))
        assert stats.status == {"token_budget": 3}
        n = rows(out2, "SELECT max(num_turns) AS n FROM trajectories")[0]["n"]
        assert 2 <= n < 10  # a visit of the long page is ~500 tokens


@pytest.mark.parametrize("protocol", ["chat", "text"])
def test_long_horizon_folds_then_summarizes_and_stays_in_the_window(wiki: Path, protocol: str) -> None:
    # 60 turns of ~500-token page visits through a 3,000-token window.
    with ScriptedServer(LoopPolicy(10_000, titles=["Long page"])) as server:
        cfg = rollout_cfg(wiki, server.url, **{"teacher.context_tokens": 3000, "teacher.max_tokens": 64,
                                                 "rollout.max_turns": 60, "teacher.protocol": protocol})
        stats = run_rollouts(cfg)
    assert stats.status == {"turn_limit": 3} and stats.errors == 0
    t = rows(wiki, "SELECT num_turns, context_events FROM trajectories")
    assert all(r["num_turns"] == 60 and r["context_events"] >= 2 for r in t)
    assert stats.context_events == sum(r["context_events"] for r in t)
    acts = Counter(r["context_action"] for r in rows(wiki, "SELECT context_action FROM turns WHERE role='assistant'"))
    # One large fold step each time ("summarized"); "truncated" only when a fold cannot fit (issue 16).
    assert acts["summarized"] > 0 and acts["none"] > acts["summarized"]
    # every request fitted: the prompt tokens the server saw stay under the window minus the reply room
    assert rows(wiki, "SELECT max(tokens_in) AS m FROM turns WHERE role = 'assistant'")[0]["m"] <= 3000 - 64


def test_script_policy_without_tool_call_gets_an_error_observation(wiki: Path) -> None:
    script = {QUESTIONS[0]["question"]: [Reply(None, thought="I think it is the Sella."),
                                         Reply("answer", {"text": "Sella"})]}
    with ScriptedServer(ScriptPolicy(script)) as server:
        run_rollouts(rollout_cfg(wiki, server.url))
    t = rows(wiki, "SELECT role, content, parse_error FROM turns WHERE question_id='q-river' ORDER BY turn_index")
    assert t[2]["parse_error"] == "no tool call: call search, visit or answer"
    assert t[3]["role"] == "user" and t[3]["content"].startswith("Error: no tool call")
    assert rows(wiki, "SELECT final_answer FROM trajectories WHERE question_id='q-river'")[0]["final_answer"] == "Sella"


# ----------------------------------------------------------------------------- the flush sink


def _traj(tid: str, n_turns: int) -> tuple[dict, list[dict]]:
    traj = {"trajectory_id": tid, "question_id": "q", "attempt": 0, "teacher_backend": "scripted",
            "teacher_model": "scripted", "status": "answered", "num_turns": n_turns}
    turns = [{"trajectory_id": tid, "question_id": "q", "turn_index": i, "role": "assistant", "content": "x",
              "context_action": "none"} for i in range(n_turns)]
    return traj, turns


def test_sink_commits_each_flush_as_one_group_of_turns_and_trajectories() -> None:
    groups: list[dict[str, pa.Table]] = []

    async def go() -> TrajectorySink:
        sink = TrajectorySink(groups.append, flush_every=2, flush_seconds=3600)
        for i, n in enumerate((2, 3, 1)):
            await sink.add(*_traj(f"t{i}", n))
        assert len(groups) == 1 and sink.written == 2  # t2 is buffered until the next flush
        await sink.flush()
        await sink.flush()  # nothing buffered: no empty group
        return sink

    sink = asyncio.run(go())
    assert sink.written == 3 and len(groups) == 2
    for g, tids in zip(groups, (["t0", "t1"], ["t2"]), strict=True):
        assert set(g) == {"turns", "trajectories"}  # both tables of a flush in one commit
        assert g["trajectories"].column("trajectory_id").to_pylist() == tids
        assert sorted(set(g["turns"].column("trajectory_id").to_pylist())) == tids
    assert groups[0]["turns"].num_rows == 5 and groups[1]["turns"].num_rows == 1


def test_sink_flushes_on_time_as_well_as_on_count() -> None:
    groups: list[dict[str, pa.Table]] = []

    async def go() -> None:
        sink = TrajectorySink(groups.append, flush_every=1000, flush_seconds=0.05)
        await sink.add(*_traj("t0", 1))
        assert groups == []
        await asyncio.sleep(0.06)
        await sink.add(*_traj("t1", 1))  # older than flush_seconds since the last flush

    asyncio.run(go())
    assert [g["trajectories"].num_rows for g in groups] == [2]


# ----------------------------------------------------------------------------- engine construction


def _teacher(url: str, kind: str, timeout_s: float = 2, **kw) -> Teacher:
    return Teacher(LeanTransport(url, api_key=None, timeout_s=timeout_s, max_connections=4), kind, backend="vllm",
                   model="scripted", max_in_flight=4, retry=Retry(1, 0.01, 0.02), **kw)


def test_engine_builds_its_protocol_from_the_teacher_kind(wiki: Path) -> None:
    cfg = rollout_cfg(wiki, **{"teacher.max_tokens": 48, "teacher.temperature": 0.3})
    env = Environment.from_tables(wiki, resolve(cfg, "graph").fingerprint)
    chat = RolloutEngine(cfg, _teacher("http://127.0.0.1:9", "chat"), env, None).protocol
    text = RolloutEngine(cfg, _teacher("http://127.0.0.1:9", "text"), env, None).protocol
    assert isinstance(chat, ChatProtocol) and isinstance(text, TextProtocol)
    assert chat.path == "/v1/chat/completions" and text.path == "/v1/completions"
    given = ChatProtocol("scripted", max_tokens=8, temperature=0)
    assert RolloutEngine(cfg, _teacher("http://127.0.0.1:9", "text"), env, None, protocol=given).protocol is given


def test_managed_server_dying_mid_run_is_restarted_and_no_trajectory_fails(wiki: Path) -> None:
    import socket

    from hopforge.llm.servers import ManagedServer, scripted_command

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = ManagedServer(scripted_command(port, policy="loop", loop_turns=6, latency_ms=20), url + "/health",
                           startup_timeout_s=30, max_restarts=2, poll_s=0.1)
    cfg = rollout_cfg(wiki, url, **{"rollout.retries": 1})  # waiting for a restart must not burn retries
    # A slow answer on a loaded machine is not what this test is about: only the restart may fail requests.
    teacher = _teacher(url, "chat", timeout_s=30, server=server)
    stats = LiveStats()
    env = Environment.from_tables(wiki, resolve(cfg, "graph").fingerprint)

    async def go() -> None:
        async with teacher:
            engine = RolloutEngine(cfg, teacher, env, None, stats)
            run = asyncio.create_task(engine.run([(f"q{i}", f"Question {i}?", 0) for i in range(24)]))
            while stats.turns < 10:
                await asyncio.sleep(0.01)
            os.kill(server.pid, signal.SIGKILL)  # type: ignore[arg-type]
            await run

    asyncio.run(go())
    assert server.restarts == 1
    assert stats.status == {"answered": 24} and stats.turns == 24 * 7


def test_trajectory_id_is_the_content_hash_of_question_attempt_model_seed_and_rollout_run() -> None:
    assert trajectory_id("q-river", 1, "m", 7) == content_id("q-river", 1, "m", 7)
    assert trajectory_id("q-river", 1, "m", 7, "rollouts-abc") == content_id("q-river", 1, "m", 7, "rollouts-abc")
    assert len({trajectory_id("q", a, "m", 0) for a in range(3)}) == 3
    # Two rollout runs (e.g. two temperatures) never share a trajectory id.
    assert trajectory_id("q", 0, "m", 0, "rollouts-a") != trajectory_id("q", 0, "m", 0, "rollouts-b")
