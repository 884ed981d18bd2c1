"""A scripted OpenAI-compatible teacher server with fault injection (tests, benchmarks, demos).

A real aiohttp HTTP server on 127.0.0.1 that answers ``/v1/chat/completions``
(native tool calls), ``/v1/completions`` (the few-shot text protocol),
``/health`` and ``/v1/models`` by asking a *policy* for the next action.

Policies (``policy(request: ScriptedRequest) -> Reply``):

* :class:`OraclePolicy` -- solves a question by following its ``path``:
  search + visit each hop, then answer. Gives later stages correct trajectories.
* :class:`ScriptPolicy` -- plays back a list of replies per question.
* :class:`LoopPolicy` -- search/visit forever, answer after ``turns`` turns (load tests).
* any callable with the same signature.

Faults (:class:`FaultPlan`): ``http_500``, ``timeout`` (the reply is held back
for ``hang_s``), ``truncated_json`` (a 200 whose body is cut in half),
``garbage`` (an unparseable tool call / action line), ``drop`` (the connection
is aborted without a response). Scheduled by request number and/or drawn at a
seeded rate; changeable at run time (``server.faults = ...`` or
``POST /_control/faults``).

In process::

    with ScriptedServer(OraclePolicy(questions)) as server:   # thread + own event loop
        base_url = server.url                                # http://127.0.0.1:<port>

As a subprocess (the launcher test and benchmarks use this)::

    python -m hopforge.testing.scripted --port 8123 --policy oracle --out data --fault-rate 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

FAULT_KINDS = ("http_500", "timeout", "truncated_json", "garbage", "drop")


@dataclass(slots=True)
class ScriptedRequest:
    kind: str  # chat | completion
    question: str
    turn: int  # assistant turns already in the history
    body: dict[str, Any]


@dataclass(slots=True)
class Reply:
    """What the scripted model says: one tool call (``tool`` + ``args``) and/or text."""

    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    thought: str = ""
    reasoning: str | None = None  # returned as message.reasoning_content (chat)
    raw: str | None = None  # completion text verbatim, overriding tool/args


Policy = Callable[[ScriptedRequest], Reply]


def _norm(q: str) -> str:
    return " ".join(q.split()).lower()


class OraclePolicy:
    """Search and visit every title of the question's path, then answer correctly."""

    def __init__(self, questions: Iterable[Mapping[str, Any]]) -> None:
        self.by_question = {_norm(q["question"]): (list(q["path"]), q["answer"]) for q in questions}

    def __call__(self, req: ScriptedRequest) -> Reply:
        found = self.by_question.get(_norm(req.question))
        if found is None:
            return Reply("answer", {"text": "unknown"}, thought="I do not know this question.")
        path, answer = found
        t = req.turn
        if t < 2 * len(path):
            title = path[t // 2]
            if t % 2 == 0:
                return Reply("search", {"query": title}, thought=f"Step {t // 2 + 1}: find {title}.")
            return Reply("visit", {"title": title}, thought=f"Read {title}.")
        return Reply("answer", {"text": answer}, thought="The path is complete.")


class ScriptPolicy:
    """Plays back ``scripts[question]`` in order; past the end it answers ``fallback``."""

    def __init__(self, scripts: Mapping[str, list[Reply]], fallback: str = "unknown") -> None:
        self.scripts = {_norm(k): v for k, v in scripts.items()}
        self.fallback = fallback

    def __call__(self, req: ScriptedRequest) -> Reply:
        script = self.scripts.get(_norm(req.question), [])
        return script[req.turn] if req.turn < len(script) else Reply("answer", {"text": self.fallback})


class LoopPolicy:
    """Alternates search and visit over ``titles`` and answers after ``turns`` turns."""

    def __init__(self, turns: int, titles: list[str] | None = None, answer: str = "loop done") -> None:
        self.turns = turns
        self.titles = titles or ["Alpha", "Beta", "Gamma"]
        self.answer = answer

    def __call__(self, req: ScriptedRequest) -> Reply:
        if req.turn >= self.turns:
            return Reply("answer", {"text": self.answer})
        title = self.titles[(req.turn // 2) % len(self.titles)]
        if req.turn % 2 == 0:
            return Reply("search", {"query": f"{title} history"}, thought="search")
        return Reply("visit", {"title": title}, thought="visit")


@dataclass
class FaultPlan:
    """Which requests fail: ``schedule`` maps 1-based request numbers to a fault kind;
    otherwise each request fails with probability ``rate`` (kind drawn from ``kinds``)."""

    schedule: dict[int, str] = field(default_factory=dict)
    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    hang_s: float = 30.0

    def __post_init__(self) -> None:
        bad = [k for k in (*self.schedule.values(), *self.kinds) if k not in FAULT_KINDS]
        if bad:
            raise ValueError(f"unknown fault kind(s) {bad}; known: {FAULT_KINDS}")
        self._rng = random.Random(self.seed)

    def pick(self, n: int) -> str | None:
        if n in self.schedule:
            return self.schedule[n]
        if self.rate > 0 and self._rng.random() < self.rate:
            return self._rng.choice(self.kinds)
        return None


def _chat_question(messages: list[dict[str, Any]]) -> tuple[str, int]:
    question = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
    turns = sum(1 for m in messages if m.get("role") == "assistant")
    return question, turns


def _completion_question(prompt: str) -> tuple[str, int]:
    i = prompt.rfind("\nQuestion:")
    if i < 0:
        return prompt.strip().split("\n")[-1], 0
    rest = prompt[i + len("\nQuestion:"):]
    question, _, transcript = rest.partition("\n")
    return question.strip(), transcript.count("\nObservation:")


def render_action(reply: Reply) -> str:
    """The text-protocol form of ``reply`` (what a few-shot base model would write)."""
    if reply.raw is not None:
        return reply.raw
    if reply.tool == "visit":
        arg = reply.args.get("title", "")
        if reply.args.get("page"):
            arg += f"|{reply.args['page']}"
    elif reply.tool == "search":
        arg = reply.args.get("query", "")
    else:
        arg = reply.args.get("text", "")
    return f" {reply.thought or 'Next step.'}\nAction: {reply.tool}[{arg}]"


class ScriptedServer:
    """The server; ``start()``/``stop()`` run it in a thread, ``start_async`` in the current loop."""

    def __init__(self, policy: Policy, *, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0,
                 faults: FaultPlan | None = None, model: str = "scripted") -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the scripted server binds to loopback only, not {host!r}")
        self.policy = policy
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self.faults = faults or FaultPlan()
        self.model = model
        self.requests = 0
        self.faults_injected: Counter[str] = Counter()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_post("/_control/faults", self._control)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _control(self, request: web.Request) -> web.Response:
        d = orjson.loads(await request.read())
        self.faults = FaultPlan(schedule={int(k): v for k, v in d.get("schedule", {}).items()},
                                rate=float(d.get("rate", 0.0)), kinds=tuple(d.get("kinds", FAULT_KINDS)),
                                seed=int(d.get("seed", 0)), hang_s=float(d.get("hang_s", 30.0)))
        return web.json_response({"ok": True})

    async def _prelude(self, request: web.Request) -> tuple[dict[str, Any], str | None, int]:
        self.requests += 1
        n = self.requests
        body = orjson.loads(await request.read())
        fault = self.faults.pick(n)
        if fault:
            self.faults_injected[fault] += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return body, fault, n

    async def _fault_response(self, request: web.Request, fault: str, payload: dict[str, Any]) -> web.StreamResponse:
        if fault == "http_500":
            return web.json_response({"error": {"message": "scripted internal error", "type": "server_error"}},
                                     status=500)
        if fault == "timeout":
            await asyncio.sleep(self.faults.hang_s)
            return web.json_response(payload)
        if fault == "truncated_json":
            data = orjson.dumps(payload)
            return web.Response(body=data[: len(data) // 2], content_type="application/json")
        # drop: abort the TCP connection with no response at all
        assert request.transport is not None
        request.transport.abort()
        return web.Response(status=500)

    def _usage(self, body_len: int, out: str) -> dict[str, int]:
        return {"prompt_tokens": body_len // 4, "completion_tokens": len(out) // 4 + 1,
                "total_tokens": body_len // 4 + len(out) // 4 + 1}

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, fault, n = await self._prelude(request)
        question, turn = _chat_question(body.get("messages", []))
        reply = self.policy(ScriptedRequest("chat", question, turn, body))
        if fault == "garbage":
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{n}", "type": "function", "function": {"name": "serch", "arguments": "{\"query\": "}}]}
        elif reply.tool:
            message = {"role": "assistant", "content": reply.thought or None, "tool_calls": [
                {"id": f"call_{n}", "type": "function",
                 "function": {"name": reply.tool, "arguments": orjson.dumps(reply.args).decode()}}]}
        else:
            message = {"role": "assistant", "content": reply.raw or reply.thought}
        if reply.reasoning:
            message["reasoning_content"] = reply.reasoning
        out = str(message.get("tool_calls") or message.get("content"))
        payload = {"id": f"chatcmpl-{n}", "object": "chat.completion", "model": self.model,
                   "choices": [{"index": 0, "message": message,
                                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
                   "usage": self._usage(request.content_length or 0, out)}
        if fault and fault != "garbage":
            return await self._fault_response(request, fault, payload)
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        body, fault, n = await self._prelude(request)
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            prompt = prompt[0] if prompt else ""
        question, turn = _completion_question(prompt)
        reply = self.policy(ScriptedRequest("completion", question, turn, body))
        text = " I will act.\nAction: serch[[unterminated" if fault == "garbage" else render_action(reply)
        payload = {"id": f"cmpl-{n}", "object": "text_completion", "model": self.model,
                   "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                   "usage": self._usage(request.content_length or 0, text)}
        if fault and fault != "garbage":
            return await self._fault_response(request, fault, payload)
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    # ------------------------------------------------------------------ lifecycle

    async def start_async(self) -> ScriptedServer:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> ScriptedServer:
        """Serve from a daemon thread with its own event loop; returns once listening."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._stopped = asyncio.Event()
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_until_complete(self._stopped.wait())
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"scripted-server-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load_oracle(out: str) -> OraclePolicy:
    from hopforge.storage import read_table

    rows = read_table(out, "questions", columns=["question", "answer", "path"]).to_pylist()
    return OraclePolicy(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hopforge.testing.scripted", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--policy", choices=["oracle", "loop"], default="oracle")
    p.add_argument("--out", help="data directory whose questions table the oracle follows")
    p.add_argument("--loop-turns", type=int, default=20)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS))
    p.add_argument("--hang-s", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="scripted")
    a = p.parse_args(argv)
    if a.policy == "oracle":
        if not a.out:
            p.error("--policy oracle needs --out (the data directory with a questions table)")
        policy: Policy = load_oracle(a.out)
    else:
        policy = LoopPolicy(a.loop_turns)
    faults = FaultPlan(rate=a.fault_rate, kinds=tuple(k for k in a.fault_kinds.split(",") if k), seed=a.seed,
                       hang_s=a.hang_s)
    server = ScriptedServer(policy, host=a.host, port=a.port, latency_s=a.latency_ms / 1000, faults=faults,
                            model=a.model)

    async def serve() -> None:
        await server.start_async()
        print(f"scripted server listening on {server.url}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
