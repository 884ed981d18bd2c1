"""Teacher clients against the scripted server's faults (both transports)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from hopforge.errors import TeacherError
from hopforge.llm.client import LeanTransport, Retry, SDKTransport, Teacher, TransientError
from hopforge.testing.scripted import FaultPlan, LoopPolicy, ScriptedServer

# A chat request as any caller makes it (the client does not know the rollout's tool protocol).
BODY = orjson.dumps({"model": "scripted", "messages": [{"role": "user", "content": "Q?"}], "max_tokens": 32,
                     "temperature": 0.0})


def teacher_for(server: ScriptedServer, client: str = "lean", retries: int = 3, timeout: float = 1.0) -> Teacher:
    cls = LeanTransport if client == "lean" else SDKTransport
    transport = cls(server.url, api_key=None, timeout_s=timeout, max_connections=8)
    return Teacher(transport, "chat", backend="scripted",
                   model="scripted", max_in_flight=4, retry=Retry(retries, 0.01, 0.02))


def tool_called(resp: dict) -> str:
    return resp["choices"][0]["message"]["tool_calls"][0]["function"]["name"]


@pytest.mark.parametrize("client", ["lean", "sdk"])
@pytest.mark.parametrize("fault", ["http_500", "timeout", "truncated_json", "drop"])
def test_transient_faults_are_retried_and_counted(client: str, fault: str) -> None:
    plan = FaultPlan(schedule={1: fault, 2: fault}, hang_s=5.0)
    with ScriptedServer(LoopPolicy(3), faults=plan) as server:
        async def go() -> tuple[object, int]:
            async with teacher_for(server, client) as t:
                resp, retries, _ = await t.post("/v1/chat/completions", BODY)
                return resp, retries

        resp, retries = asyncio.run(go())
        assert retries == 2 and server.requests == 3
        assert server.faults_injected[fault] == 2
        assert tool_called(resp) == "search"


@pytest.mark.parametrize("client", ["lean", "sdk"])
def test_retries_exhausted_raise_teacher_error_naming_the_cause(client: str) -> None:
    with ScriptedServer(LoopPolicy(3), faults=FaultPlan(rate=1.0, kinds=("http_500",))) as server:
        async def go() -> None:
            async with teacher_for(server, client, retries=2) as t:
                await t.post("/v1/chat/completions", BODY)

        with pytest.raises(TeacherError, match=r"HTTP 500.*gave up after 2 retries"):
            asyncio.run(go())
        assert server.requests == 3


def test_garbage_tool_call_is_returned_not_retried() -> None:
    # A 200 with a malformed tool call is the model's output: the rollout's parser judges it
    # (tests/rollouts/test_protocol.py), the client neither retries nor rejects it.
    with ScriptedServer(LoopPolicy(3), faults=FaultPlan(schedule={1: "garbage"})) as server:
        async def go() -> tuple[dict, int]:
            async with teacher_for(server) as t:
                resp, retries, _ = await t.post("/v1/chat/completions", BODY)
                return resp, retries

        resp, retries = asyncio.run(go())
        assert retries == 0 and server.requests == 1
        assert resp["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "serch",
                                                                              "arguments": '{"query": '}


def test_client_error_4xx_is_not_retried() -> None:
    with ScriptedServer(LoopPolicy(3)) as server:
        async def go() -> None:
            async with teacher_for(server) as t:
                await t.transport.post("/v1/nope", b"{}")

        with pytest.raises(TeacherError, match="HTTP 404") as e:
            asyncio.run(go())
        assert not isinstance(e.value, TransientError)


def test_connection_refused_is_transient() -> None:
    server = ScriptedServer(LoopPolicy(1)).start()
    url = server.url
    server.stop()

    async def go() -> None:
        t = LeanTransport(url, api_key=None, timeout_s=1, max_connections=1)
        try:
            await t.post("/v1/chat/completions", b"{}")
        finally:
            await t.aclose()

    with pytest.raises(TransientError, match="connection failed"):
        asyncio.run(go())


def test_in_flight_bound_is_global() -> None:
    with ScriptedServer(LoopPolicy(3), latency_s=0.05) as server:
        peak = 0

        async def go() -> None:
            nonlocal peak
            async with teacher_for(server) as t:  # max_in_flight=4
                async def one() -> None:
                    nonlocal peak
                    task = asyncio.create_task(t.post("/v1/chat/completions", BODY))
                    while not task.done():
                        peak = max(peak, t.in_flight)
                        await asyncio.sleep(0.005)
                    await task
                await asyncio.gather(*(one() for _ in range(12)))

        asyncio.run(go())
        assert peak == 4


def test_complete_text_chat_and_text_backends() -> None:
    with ScriptedServer(LoopPolicy(0, answer="forty-two")) as server:
        async def go() -> tuple[str, str]:
            async with teacher_for(server) as t:
                chat = await t.complete_text([{"role": "user", "content": "hi"}], max_tokens=8, temperature=0)
            t2 = teacher_for(server)
            t2.kind = "text"
            async with t2:
                text = await t2.complete_text([{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "hi"}], max_tokens=8, temperature=0,
                                              stop=["\n\n"])
            return chat, text

        chat, text = asyncio.run(go())
        # The scripted model answers with a tool call (no content) in chat, and its action line in text.
        assert chat == ""
        assert text.endswith("Action: answer[forty-two]")


def test_control_endpoint_changes_faults_at_run_time() -> None:
    import urllib.request

    with ScriptedServer(LoopPolicy(3)) as server:
        req = urllib.request.Request(server.url + "/_control/faults", data=orjson.dumps({"schedule": {"1": "http_500"}}),
                                     method="POST")
        urllib.request.urlopen(req).read()
        server.requests = 0
        with pytest.raises(ValueError, match="unknown fault kind"):
            FaultPlan(schedule={1: "meteor"})
        assert server.faults.pick(1) == "http_500"


def test_make_teacher_picks_protocol_transport_and_server() -> None:
    from hopforge.config import load_config
    from hopforge.llm.client import make_teacher

    cpu = make_teacher(load_config(None, {"teacher.backend": "cpu", "teacher.model_path": "/m.gguf"}))
    assert cpu.kind == "text" and cpu.server is not None
    assert cpu.server.cmd[cpu.server.cmd.index("--model") + 1] == "/m.gguf"
    assert cpu.server.health_url.endswith("/v1/models")
    vllm = make_teacher(load_config(None, {"teacher.backend": "vllm", "teacher.client": "sdk"}))
    assert vllm.kind == "chat" and isinstance(vllm.transport, SDKTransport)
    assert vllm.server is not None and vllm.server.cmd[:2] == ["vllm", "serve"]
    attached = make_teacher(load_config(None, {"teacher.backend": "vllm", "teacher.base_url": "http://127.0.0.1:9/v1"}))
    assert attached.server is None and isinstance(attached.transport, LeanTransport) and attached.kind == "chat"
    forced = make_teacher(load_config(None, {"teacher.backend": "vllm", "teacher.protocol": "text",
                                             "teacher.base_url": "http://127.0.0.1:9"}))
    assert forced.kind == "text"  # teacher.protocol overrides the backend's default
    assert attached.transport.base_url == "http://127.0.0.1:9"
    with pytest.raises(TeacherError, match="needs teacher.base_url"):
        make_teacher(load_config(None, {"teacher.backend": "openai"}))
