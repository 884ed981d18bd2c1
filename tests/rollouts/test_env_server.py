"""``hopforge env serve`` (src/hopforge/rollouts/env_server.py): the teacher's search environment over
HTTP/JSON and MCP, with concurrent clients, the teacher's argument validator, and bounded resources."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from hopforge.rollouts.env_server import EnvService, ServerLimits, build_app
from hopforge.rollouts.environment import Environment
from hopforge.stage import resolve
from hopforge.storage.tools import TOOL_SCHEMAS, validate_args
from tests.rollouts.rollout_fixtures import PAGES, rollout_cfg, write_wiki

QUERIES = ["capital of Veloria", "river Sella Amber Sea", "Ostra Optics founder", "Quillon 3 camera", "amber trade",
           "Hanne Lind engineer", "Marren Observatory", "Grey Hills"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app, limit_concurrency: int | None = None) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error",
                                                    limit_concurrency=limit_concurrency))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Environment:
    out = tmp_path_factory.mktemp("env") / "out"
    cfg = rollout_cfg(out)
    write_wiki(out, cfg=cfg)
    return Environment.from_tables(out, resolve(cfg, "graph").fingerprint, page_chars=cfg.rollout.page_chars)


def expected(env: Environment, name: str, args: dict) -> str:
    typed, problem = validate_args(name, args, max_k=20)
    assert problem is None
    if name == "search":
        return env.render_search(typed["query"], typed.get("k") or 5)
    return env.render_visit(typed["title"], typed.get("page") or 0)


def calls() -> list[tuple[str, dict]]:
    out = []
    for i, q in enumerate(QUERIES):
        out.append(("search", {"query": q, "k": 1 + i % 4}))
        title = list(PAGES)[i % len(PAGES)]
        out.append(("visit", {"title": title.lower() if i % 2 else title, "page": 0}))
    out.append(("visit", {"title": "Long page", "page": 1}))
    out.append(("visit", {"title": "Sella"}))  # a redirect
    return out


def test_http_concurrent_clients_get_what_the_teacher_got(env):
    service = EnvService(env, limits=ServerLimits(workers=2, max_pending=512))
    with Running(build_app(service, mcp=False)) as srv:
        async def main():
            async with aiohttp.ClientSession() as http:
                async def one(client: int, name: str, args: dict):
                    path = f"/{name}" if client % 2 else "/call"
                    body = args if client % 2 else {"name": name, "arguments": args}
                    async with http.post(srv.url + path, json=body) as r:
                        assert r.status == 200, await r.text()
                        return client, name, args, await r.json()
                jobs = [one(c, n, a) for c in range(64) for n, a in calls()[c % 9: c % 9 + 3]]
                return await asyncio.gather(*jobs)
        results = asyncio.run(main())
    assert len(results) == 64 * 3
    for _, name, args, res in results:
        assert res["tool"] == name and res["observation"] == expected(env, name, args)
        if name == "search":
            assert [h["title"] for h in res["hits"]] == [h.title for h in env.search(args["query"], args["k"])]
    assert service.calls == 64 * 3


def test_http_bad_arguments_are_the_validators_errors(env):
    service = EnvService(env)
    with Running(build_app(service, mcp=False)) as srv:
        import urllib.error
        import urllib.request

        def post(path: str, body: bytes) -> tuple[int, dict]:
            req = urllib.request.Request(srv.url + path, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        for path, args in (("/search", {"query": "  "}), ("/search", {"query": "x", "k": 0}),
                           ("/search", {"query": "x", "limit": 3}), ("/visit", {"title": "Marren", "page": -1}),
                           ("/visit", ["Marren"])):
            status, body = post(path, json.dumps(args).encode())
            assert (status, body["error"]) == (400, validate_args(path[1:], args, max_k=20)[1]), (path, args)
        status, body = post("/call", json.dumps({"name": "answer", "arguments": {"text": "x"}}).encode())
        assert status == 404 and "unknown tool 'answer'" in body["error"]
        status, body = post("/call", json.dumps({"name": "browse", "arguments": {}}).encode())
        assert status == 404 and "unknown tool 'browse'" in body["error"]
        status, body = post("/search", b"{not json")
        assert status == 400 and body["error"].startswith("request body is not JSON")
        status, body = post("/search", json.dumps({"query": "x" * 100_000}).encode())
        assert status == 413 and "over the limit of 65536" in body["error"]
        status, body = post("/call", b'{"arguments": {}}')
        assert status == 400 and "must be" in body["error"]


def test_a_flood_beyond_the_bound_gets_503_not_unbounded_queues(env, monkeypatch):
    service = EnvService(env, limits=ServerLimits(workers=1, max_pending=2))
    gate = threading.Event()
    real = env.render_search

    def slow(query, k):
        gate.wait(10)
        return real(query, k)

    monkeypatch.setattr(env, "render_search", slow)
    with Running(build_app(service, mcp=False)) as srv:
        async def main():
            async with aiohttp.ClientSession() as http:
                async def one(i):
                    async with http.post(srv.url + "/search", json={"query": "Veloria"}) as r:
                        return r.status
                tasks = [asyncio.create_task(one(i)) for i in range(10)]
                await asyncio.sleep(1.0)
                gate.set()
                return await asyncio.gather(*tasks)
        statuses = asyncio.run(main())
    # One running + two waiting are admitted; the other seven are told to retry.
    assert sorted(statuses) == [200] * 3 + [503] * 7 and service.rejected_busy == 7


def test_mcp_concurrent_clients(env):
    mcp = pytest.importorskip("mcp")
    service = EnvService(env)
    with Running(build_app(service, mcp=True)) as srv:
        async def client(i: int):
            async with mcp.Client(srv.url + "/mcp") as c:
                tools = await c.list_tools()
                got = []
                for name, args in calls()[i % 6: i % 6 + 4]:
                    r = await c.call_tool(name, args)
                    got.append((name, args, r))
                bad = await c.call_tool("search", {"query": "x", "k": "many"})
                unknown = await c.call_tool("answer", {"text": "x"})
                return tools, got, bad, unknown

        async def main():
            return await asyncio.gather(*(client(i) for i in range(8)))

        results = asyncio.run(main())
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOL_SCHEMAS}
    for tools, got, bad, unknown in results:
        assert {t.name: t.input_schema for t in tools.tools} == {"search": schemas["search"], "visit": schemas["visit"]}
        for name, args, r in got:
            assert not r.is_error and r.content[0].text == expected(env, name, args)
            assert r.structured_content["tool"] == name
        assert bad.is_error and bad.content[0].text == "search: 'k' must be a positive integer"
        assert unknown.is_error and "unknown tool 'answer'" in unknown.content[0].text
    assert service.calls == 8 * 4


def test_cli_env_serve_listens_on_loopback(tmp_path):
    out = tmp_path / "out"
    cfg = rollout_cfg(out)
    write_wiki(out, cfg=cfg)
    port = free_port()
    src = Path(__file__).resolve().parents[2] / "src"
    proc = subprocess.Popen([sys.executable, "-m", "hopforge.cli", "env", "serve", "--out", str(out), "--port",
                             str(port)], env={**os.environ, "PYTHONPATH": str(src)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        import urllib.request

        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    health = json.loads(r.read())
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert health["ok"] and health["pages"] == len(PAGES)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/search", data=b'{"query": "capital of Veloria"}')
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["hits"][0]["title"] in ("Veloria", "Marren")
        # The listening socket is bound to loopback only (/proc/net/tcp: local address 0100007F = 127.0.0.1).
        listening = [ln.split()[1] for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if ln.split()[3] == "0A" and int(ln.split()[1].split(":")[1], 16) == port]
        assert listening == [f"0100007F:{port:04X}"]
    finally:
        proc.terminate()
        proc.wait(10)
