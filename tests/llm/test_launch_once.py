"""One teacher per stage run: a managed server is launched once for all the run's batches, whatever
runs them (the local executor, or batches in threads as Prefect's thread runner runs them), and
``rollout.max_in_flight`` bounds the requests of the whole run at the server.

The managed server is the real ``vllm`` code path (``make_teacher`` -> ``vllm_command`` ->
``ManagedServer``) with a stand-in ``vllm`` executable first on PATH: it records each launch
and runs the scripted server, which writes its request stats (peak concurrency) when stopped.
"""

from __future__ import annotations

import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from hopforge.llm import service
from hopforge.rollouts import RolloutStage, run_rollouts
from hopforge.stage import close_run, execute_batch, resolve
from hopforge.storage import query_arrow
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki

SRC = Path(__file__).resolve().parents[2] / "src"

STAND_IN = """#!{python}
# Stand-in for `vllm serve MODEL --port P ...`: record the launch, serve the scripted teacher.
import os, sys
args = sys.argv[1:]
assert args[0] == "serve", args
port = args[args.index("--port") + 1]
with open(os.environ["STAND_IN_LAUNCHES"], "a") as f:
    f.write(" ".join(args) + "\\n")
policy = ["--policy", "oracle", "--out", os.environ["STAND_IN_OUT"]] if os.environ.get("STAND_IN_OUT") else \
    ["--policy", "loop", "--loop-turns", "4"]
os.execv(sys.executable, [sys.executable, "-m", "hopforge.testing.scripted", "--port", port, *policy,
                          "--latency-ms", "40", "--stats-file", os.environ["STAND_IN_STATS"] + "." + str(os.getpid())])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A fake `vllm` on PATH; returns (launch log, stats file prefix)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vllm"
    exe.write_text(STAND_IN.format(python=sys.executable), encoding="utf-8")
    exe.chmod(0o755)
    launches, stats = tmp_path / "launches.txt", tmp_path / "stats.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PYTHONPATH", f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("STAND_IN_LAUNCHES", str(launches))
    monkeypatch.setenv("STAND_IN_STATS", str(stats))
    return launches, stats


def managed_cfg(out: Path, **over: object):
    # 3 questions x 4 attempts = 12 trajectories in batches of 2: six batches.
    return rollout_cfg(out, **{"teacher.backend": "vllm", "teacher.model": "stand-in", "teacher.port": free_port(),
                               "teacher.startup_timeout_s": 60, "rollout.attempts_per_question": 4,
                               "rollout.batch_questions": 2, "rollout.max_in_flight": 3, **over})


def server_stats(prefix: Path) -> list[dict]:
    return [orjson.loads(p.read_bytes()) for p in sorted(prefix.parent.glob(prefix.name + ".*"))]


def test_local_executor_launches_the_managed_server_once_for_every_batch(tmp_path: Path, stand_in) -> None:
    launches, stats = stand_in
    out = tmp_path / "out"
    cfg = write_wiki(out, cfg=managed_cfg(out))
    result = run_rollouts(cfg)
    assert result.batches == 6 and result.status == {"answered": 12}
    assert len(launches.read_text().splitlines()) == 1
    assert service.open_services() == []  # stopped when the stage run ended
    (st,) = server_stats(stats)  # the one server wrote its stats when it was stopped
    assert st["requests"] == 12 * 5 and st["peak_in_flight"] <= 3
    rows = query_arrow(out, "SELECT DISTINCT endpoint FROM trajectories").to_pylist()
    assert rows == [{"endpoint": f"http://127.0.0.1:{cfg.teacher.port}"}]


def test_batches_in_threads_share_one_server_and_one_in_flight_bound(tmp_path: Path, stand_in) -> None:
    """What Prefect's thread runner does (batch_task -> execute_batch in pool threads, then the stage
    flow's close_run), without starting a Prefect API."""
    launches, stats = stand_in
    out = tmp_path / "out"
    cfg = write_wiki(out, cfg=managed_cfg(out))
    run = resolve(cfg, "rollouts")
    stage = RolloutStage()
    batches = stage.plan(run)
    assert len(batches) == 6
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda b: execute_batch(stage, run, b), batches))
    finally:
        close_run(run)
    assert sum(r.trajectories for r in results) == 12
    assert len(launches.read_text().splitlines()) == 1
    (st,) = server_stats(stats)
    # Four batches in flight at once, each with up to 2 trajectories: without a global bound the
    # server would see up to 8 requests at a time.
    assert 2 <= st["peak_in_flight"] <= 3, st


def test_a_second_stage_run_gets_its_own_teacher_and_a_failed_start_is_a_clear_error(tmp_path: Path,
                                                                                    stand_in) -> None:
    from hopforge.errors import TeacherError

    launches, _ = stand_in
    out = tmp_path / "out"
    cfg = write_wiki(out, cfg=managed_cfg(out))
    a = service.shared_teacher(cfg, scope="run-a")
    assert service.shared_teacher(cfg, scope="run-a").service is a.service
    b = service.shared_teacher(cfg.model_copy(update={"teacher": cfg.teacher.model_copy(
        update={"port": free_port()})}), scope="run-b")
    assert b.service is not a.service
    assert service.release_teachers("run-a") == 1 and service.release_teachers("run-b") == 1
    assert len(launches.read_text().splitlines()) == 2 and service.open_services() == []
    bad = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"backend": "cpu",
                                                                            "model_path": "/nonexistent.gguf",
                                                                            "startup_timeout_s": 20})})
    with pytest.raises(TeacherError, match="exited with code"):
        service.shared_teacher(bad, scope="run-c")
    assert service.open_services() == []


def test_the_turn_judge_launches_once_for_all_label_batches(tmp_path: Path, stand_in,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Label batches follow rollout batches (six here); with labels.judge every one of them asks the
    teacher, and the stage run launches it once (the rollout stage's own launch is the other one)."""
    from hopforge.filters import run_filters
    from hopforge.labels.stage import run_labels

    launches, stats = stand_in
    out = tmp_path / "out"
    monkeypatch.setenv("STAND_IN_OUT", str(out))  # the stand-in serves the oracle over this OUT's questions
    cfg = write_wiki(out, cfg=managed_cfg(out, **{"labels.judge": True, "filters.min_tool_calls": 1}))
    assert run_rollouts(cfg).status == {"answered": 12}
    assert run_filters(cfg).kept >= 3
    labels = run_labels(cfg)
    assert labels.batches == 6 and labels.judge_requests >= 3
    assert len(launches.read_text().splitlines()) == 2  # one for the rollout run, one for the label run
    assert service.open_services() == []
    # The two servers' request counts: 4 attempts of 7 + 5 + 3 oracle turns, and every judge request.
    assert sorted(s["requests"] for s in server_stats(stats)) == sorted([4 * (7 + 5 + 3), labels.judge_requests])


def test_the_closed_run_teacher_refuses_new_requests(tmp_path: Path) -> None:
    import asyncio

    from hopforge.errors import TeacherError

    out = tmp_path / "out"
    cfg = write_wiki(out)
    shared = service.shared_teacher(cfg, scope="closed-run")
    service.release_teachers("closed-run")
    with pytest.raises(TeacherError, match="was closed"):
        asyncio.run(shared.post("/v1/chat/completions", b"{}"))
    assert QUESTIONS  # the fixture wiki the teacher would have served


def test_ctrl_c_during_a_batch_commits_what_the_engine_buffered(tmp_path: Path) -> None:
    """The batch runs on the teacher's loop thread: a Ctrl-C in the main thread cancels it there and
    waits for the engine's last flush, as asyncio.run did when the batch ran in the main thread."""
    import signal
    import threading
    import time

    from hopforge.storage import read_table
    from hopforge.testing.scripted import LoopPolicy, ScriptedServer

    out = tmp_path / "out"
    with ScriptedServer(LoopPolicy(6), latency_s=0.05) as srv:
        # 60 trajectories x 7 turns at 4 in flight: ~5 s; nothing is flushed before the end of the batch.
        cfg = write_wiki(out, cfg=rollout_cfg(out, srv.url, **{
            "rollout.attempts_per_question": 20, "rollout.max_in_flight": 4, "rollout.flush_every": 1000,
            "rollout.flush_seconds": 1000}))
        timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT))
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                run_rollouts(cfg)
        finally:
            timer.cancel()
        stopped = time.monotonic() - t0
    written = read_table(out, "trajectories")
    assert stopped < 4 and 0 < written.num_rows < 60  # interrupted mid-batch, yet the finished ones are kept
    assert set(written.column("status").to_pylist()) == {"answered"}
    assert service.open_services() == []
