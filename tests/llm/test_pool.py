"""A pool of teacher endpoints (teacher.base_urls): least-outstanding routing, sticky per trajectory,
ejection of a dead endpoint with its requests re-routed (and counted as retries), re-admission by
the health check, and the endpoint recorded per trajectory."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from hopforge.config import load_config
from hopforge.errors import ConfigError, TeacherError
from hopforge.llm.client import EndpointDownError, Retry, Teacher, TransientError
from hopforge.llm.pool import Endpoint, EndpointPool
from hopforge.llm.servers import ManagedServer, scripted_command
from hopforge.rollouts import run_rollouts
from hopforge.rollouts.engine import LiveStats, RolloutEngine
from hopforge.rollouts.environment import Environment
from hopforge.storage import query_arrow
from hopforge.testing.scripted import LoopPolicy, ScriptedServer
from tests.rollouts.rollout_fixtures import rollout_cfg, write_wiki

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeTransport:
    def __init__(self, fail: type[Exception] | None = None) -> None:
        self.fail = fail
        self.calls = 0

    async def post(self, path: str, body: bytes) -> dict:
        self.calls += 1
        if self.fail is not None:
            raise self.fail("boom")
        return {"ok": True}

    async def aclose(self) -> None:
        pass


def pool_of(n: int, **kw: object) -> EndpointPool:
    return EndpointPool([Endpoint(f"http://e{i}:8000", FakeTransport()) for i in range(n)], **kw)  # type: ignore[arg-type]


def test_least_outstanding_first_pick_then_sticky_while_healthy() -> None:
    pool = pool_of(3)
    a, b, c = pool.endpoints
    a.outstanding, b.outstanding, c.outstanding = 5, 1, 3
    assert pool.pick("t1") is b
    b.outstanding = 9  # busier now, but t1 stays where its prefix is cached
    assert pool.pick("t1") is b and pool.pick("t2") is c
    assert pool.endpoint_of("t1") == "http://e1:8000"
    pool.failed(b, EndpointDownError("refused"), down=True)  # refused: ejected at once
    assert not b.healthy and pool.pick("t1") is c  # moved, and sticky to its new endpoint
    assert pool.endpoint_of("t1") == "http://e2:8000"
    pool.forget("t1")
    assert pool.endpoint_of("t1") is None


def test_transient_failures_eject_after_three_in_a_row_and_a_pool_of_one_never_ejects() -> None:
    pool = pool_of(2)
    a = pool.endpoints[0]
    assert pool.failed(a, TransientError("500"), down=False) is False
    pool.succeeded(a)  # a success resets the count
    for _ in range(2):
        assert pool.failed(a, TransientError("500"), down=False) is False
    assert pool.failed(a, TransientError("500"), down=False) is True and not a.healthy
    solo = pool_of(1)
    for _ in range(10):
        assert solo.failed(solo.endpoints[0], EndpointDownError("x"), down=True) is False
    assert solo.endpoints[0].healthy


def test_a_dead_endpoints_request_moves_to_another_and_the_retry_is_counted() -> None:
    dead, live = FakeTransport(EndpointDownError), FakeTransport()
    pool = EndpointPool([Endpoint("http://dead:1", dead), Endpoint("http://live:2", live)])  # type: ignore[arg-type]
    teacher = Teacher(None, backend="openai", model="m", retry=Retry(3, 10.0, 10.0), pool=pool)

    async def go() -> tuple[object, int, float]:
        return await teacher.post("/v1/chat/completions", b"{}", "t1")

    t0 = time.monotonic()
    resp, retries, _ = asyncio.run(go())
    assert resp == {"ok": True} and retries == 1 and dead.calls == 1 and live.calls == 1
    assert time.monotonic() - t0 < 5  # re-routed at once, not after a 10 s backoff
    assert teacher.endpoint_of("t1") == "http://live:2"


def test_every_endpoint_dead_is_a_clear_error_naming_them() -> None:
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    cfg = load_config(None, {"teacher.backend": "openai", "teacher.base_urls": urls, "rollout.retries": 3,
                             "rollout.retry_base_s": 0.01, "rollout.retry_max_s": 0.02})
    from hopforge.llm.client import make_teacher

    async def go() -> None:
        async with make_teacher(cfg) as t:
            await t.post("/v1/chat/completions", b"{}", "t1")

    with pytest.raises(TeacherError, match=r"connection failed.*gave up after 3 retries; endpoints: "
                                           r"http://127\.0\.0\.1:\d+ ejected .*; http://127\.0\.0\.1:\d+ ejected"):
        asyncio.run(go())


@pytest.mark.parametrize(("over", "message"), [
    ({"teacher.base_urls": ["ftp://gpu-1:8000"]}, r"teacher.base_urls\[0\] = 'ftp://gpu-1:8000' is not an http"),
    ({"teacher.base_urls": ["http://gpu-1:8000/v1", "http://gpu-1:8000"]}, r"base_urls\[1\] .* listed twice"),
    ({"teacher.base_urls": ["http://gpu-1:8000"], "teacher.base_url": "http://gpu-2:8000"}, "not both"),
    ({"teacher.base_url": "gpu-2:8000"}, "is not an http"),
])
def test_bad_endpoint_config_is_one_clear_error(over: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, over)


def test_sticky_routing_keeps_each_trajectory_on_one_server_and_spreads_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_wiki(out)
    servers = [ScriptedServer(LoopPolicy(6), latency_s=0.01).start() for _ in range(3)]
    try:
        cfg = rollout_cfg(out, **{"teacher.backend": "openai", "teacher.base_urls": [s.url for s in servers],
                                  "rollout.max_in_flight": 8})
        from hopforge.llm.client import make_teacher

        async def go() -> LiveStats:
            stats = LiveStats()
            async with make_teacher(cfg) as teacher:
                engine = RolloutEngine(cfg, teacher, Environment.from_tables(out), None, stats)
                await engine.run([(f"q{i}", f"Question {i}?", 0) for i in range(12)])
            return stats

        stats = asyncio.run(go())
    finally:
        for s in servers:
            s.stop()
    assert stats.status == {"answered": 12} and stats.retries == 0
    keys = [{k for k, *_ in s.prefix_log} for s in servers]
    assert sum(len(k) for k in keys) == 12  # every trajectory on exactly one server...
    assert all(len(k) >= 2 for k in keys), [len(k) for k in keys]  # ...and least-outstanding spread them
    # ...and every request after a trajectory's first extended the prompt the same server saw before
    later = [(p, x) for s in servers for _, p, x, _ in s.prefix_log if x >= 0]
    assert later and all(x > 0 for _, x in later)


def test_an_ejected_endpoint_is_readmitted_by_the_health_check() -> None:
    port = free_port()
    back = ScriptedServer(LoopPolicy(3), port=port)
    other = ScriptedServer(LoopPolicy(3)).start()
    cfg = load_config(None, {"teacher.backend": "openai", "rollout.retries": 2, "teacher.health_check_s": 0.1,
                             "teacher.base_urls": [f"http://127.0.0.1:{port}", other.url]})
    from hopforge.llm.client import make_teacher

    async def go() -> list[bool]:
        async with make_teacher(cfg) as t:
            ep = t.pool.endpoints[0]
            seen = []
            for _ in range(20):  # the health check finds nothing on `port`: ejected
                await asyncio.sleep(0.05)
                if not ep.healthy:
                    break
            seen.append(ep.healthy)
            await asyncio.to_thread(back.start)
            for _ in range(40):
                await asyncio.sleep(0.05)
                if ep.healthy:
                    break
            seen.append(ep.healthy)
            for i in range(4):  # new trajectories are routed to it again
                await t.post("/v1/chat/completions", b'{"messages": []}', f"fresh{i}")
            seen.append(back.requests >= 2)
            return seen

    try:
        assert asyncio.run(go()) == [False, True, True]
    finally:
        back.stop()
        other.stop()


def test_one_of_three_servers_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    """Three scripted server processes; one is SIGKILLed while trajectories run on it. Its
    trajectories move to the other two (the failed request retried there, counted), every
    trajectory is written once and answered, and each records the endpoint that served it."""
    out = tmp_path / "out"
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    env = {"PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    servers = [ManagedServer(scripted_command(p, policy="loop", loop_turns=8, latency_ms=30), u + "/health",
                             startup_timeout_s=60, env=env) for p, u in zip(ports, urls, strict=True)]
    for s in servers:
        s.start()
    try:
        cfg = write_wiki(out, cfg=rollout_cfg(out, **{
            "teacher.backend": "openai", "teacher.base_urls": urls, "teacher.health_check_s": 0.2,
            "rollout.attempts_per_question": 12, "rollout.max_in_flight": 12, "rollout.retries": 3,
            "rollout.request_timeout_s": 5.0, "rollout.flush_every": 8}))
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(stats=run_rollouts(cfg)))
        runner.start()

        def served(url: str) -> int:
            with urllib.request.urlopen(url + "/_control/stats", timeout=2) as r:
                return orjson.loads(r.read())["requests"]

        deadline = time.monotonic() + 60
        while served(urls[1]) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        before_kill = served(urls[1])
        os.kill(servers[1].pid, signal.SIGKILL)  # type: ignore[arg-type]
        runner.join(120)
        assert not runner.is_alive()
    finally:
        for s in servers:
            s.stop()
    stats = result["stats"]
    assert stats.trajectories == 36 and stats.status == {"answered": 36}, stats
    assert 40 <= before_kill < 36 * 9  # killed mid-run, not after the work was done
    rows = query_arrow(out, "SELECT endpoint, count(*) AS n, sum(retries) AS retries FROM trajectories "
                            "GROUP BY endpoint ORDER BY endpoint").to_pylist()
    by = {r["endpoint"]: r for r in rows}
    assert sum(r["n"] for r in rows) == 36  # nothing lost, nothing twice
    assert set(by) <= set(urls) and by[urls[0]]["n"] > 0 and by[urls[2]]["n"] > 0
    # The requests in flight at the dead server were retried elsewhere and counted.
    assert stats.retries >= 1 and sum(r["retries"] or 0 for r in rows) == stats.retries
    assert query_arrow(out, "SELECT count(*) AS n FROM turns WHERE role = 'assistant'").to_pylist()[0]["n"] == 36 * 9
