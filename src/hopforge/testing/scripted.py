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

Tool calls come back natively (``tool_calls``) or, with ``tool_format``, as message text the
way servers without a tool parser return them: ``hermes`` (``<tool_call>{...}</tool_call>``),
``json`` (a bare object), ``tools`` (wrapped in ``<tools>...</tools>``), each followed by the
invented tool result such models go on to write, unless a ``stop`` sequence cuts it off
(stop sequences are honoured like a real server: the text ends before the first one).

Measurements (``server.stats()`` or ``GET /_control/stats``): requests, the peak of
concurrent requests, and per request how much of the prompt is a prefix of the same
trajectory's previous request (trajectories are told apart by the request's ``user``
field, else by their question): the part outside that prefix is what a server with prefix
caching must prefill again. The turn a policy sees is the number of distinct ``seed`` values
the trajectory has sent before (the engine sends one per turn, a retry repeats it), so it
keeps counting when the client folds old turns out of the history, or the number of
assistant messages in the history if that is larger (a trajectory that moved here from
another server).

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
TOOL_FORMATS = ("native", "hermes", "json", "tools")


@dataclass(slots=True)
class ScriptedRequest:
    kind: str  # chat | completion
    question: str
    turn: int  # the trajectory's turns before this one (see the module docstring)
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


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix of ``a`` and ``b`` (memcmp over halving blocks, not a byte loop)."""
    n = min(len(a), len(b))
    lo = 0
    step = max(1, n)
    while step:
        while lo + step <= n and a[lo:lo + step] == b[lo:lo + step]:
            lo += step
        step //= 2
    return lo


def chat_prompt(messages: list[dict[str, Any]]) -> tuple[bytes, int]:
    """The prompt as the server sees it (messages in order, canonical JSON) and the length of its tail
    from the last assistant message on: what a turn adds to an append-only history."""
    parts = [orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in messages]
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    new = sum(len(p) for p in parts[last:]) if last is not None else sum(len(p) for p in parts)
    return b"".join(parts), new


def completion_prompt(prompt: str) -> tuple[bytes, int]:
    """A text prompt and the length of its last turn (from the second-to-last ``Thought:``)."""
    data = prompt.encode()
    i = data.rfind(b"\nThought:")
    j = data.rfind(b"\nThought:", 0, i) if i > 0 else -1
    return data, (len(data) - j - len(b"\nThought:")) if j >= 0 else len(data)


def _cut_at_stop(text: str, stop: Any) -> str:
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list):
        return text
    cut = len(text)
    for s in stop:
        if isinstance(s, str) and s:
            i = text.find(s)
            if i >= 0:
                cut = min(cut, i)
    return text[:cut]


def text_tool_call(reply: Reply, fmt: str) -> str:
    """``reply``'s call written into the message text the way a model without a server-side parser
    writes it, followed by the tool result such a model goes on to invent."""
    call = orjson.dumps({"name": reply.tool, "arguments": reply.args}).decode()
    thought = (reply.thought + "\n") if reply.thought else ""
    if fmt == "hermes":
        return (f"{thought}<tool_call>\n{call}\n</tool_call>\n<tool_response>\n[1] Invented result "
                "(passage 1:0)\nThis text was made up by the model.\n</tool_response>")
    if fmt == "tools":
        return f"{thought}<tools>\n{call}\n</tools>\n\nObservation: [1] Invented result (passage 1:0)"
    return f"{thought}{call}\n\nObservation: [1] Invented result (passage 1:0)\nThe answer is probably 42."


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
                 faults: FaultPlan | None = None, model: str = "scripted", tool_format: str = "native",
                 measure_prefix: bool = True) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the scripted server binds to loopback only, not {host!r}")
        if tool_format not in TOOL_FORMATS:
            raise ValueError(f"unknown tool_format {tool_format!r}; known: {TOOL_FORMATS}")
        self.tool_format = tool_format
        self.measure_prefix = measure_prefix
        self.in_flight = 0
        self.peak_in_flight = 0
        # trajectory key -> (previous prompt, distinct seeds in order of first use)
        self._prev: dict[str, bytes] = {}
        self._seeds: dict[str, dict[int, int]] = {}
        self.prefix_log: list[tuple[str, int, int, int]] = []  # (key, prompt, prefix, new) bytes per request
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
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._count])
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_post("/_control/faults", self._control)
        app.router.add_get("/_control/stats", self._stats)
        return app

    def stats(self) -> dict[str, Any]:
        """Requests, peak concurrency, and the prefix measurements (see the module docstring).

        ``resent_ratio``: over every request but each trajectory's first, prompt bytes outside the
        previous request's prefix divided by the bytes the turn added (1.0 = purely append-only)."""
        later = [(k, p, x, n) for k, p, x, n in self.prefix_log if x >= 0]
        outside = sum(p - x for _, p, x, _ in later)
        new = sum(n for *_, n in later)
        return {"requests": self.requests, "peak_in_flight": self.peak_in_flight,
                "trajectories": len(self._prev), "measured_requests": len(later),
                "prompt_bytes": sum(p for _, p, _, _ in later), "outside_prefix_bytes": outside, "new_bytes": new,
                "resent_ratio": outside / new if new else None}

    async def _stats(self, request: web.Request) -> web.Response:
        d = self.stats()
        if request.query.get("log"):
            d["log"] = self.prefix_log
        return web.json_response(d, dumps=lambda o: orjson.dumps(o).decode())

    def _observe(self, body: dict[str, Any], question: str, prompt: bytes, new: int, turn: int) -> int:
        """Record the prefix measurement; returns the trajectory's turn number."""
        key = body.get("user") if isinstance(body.get("user"), str) else f"q:{_norm(question)}"
        if self.measure_prefix:
            prev = self._prev.get(key)
            shared = _common_prefix(prev, prompt) if prev is not None else -1
            self.prefix_log.append((key, len(prompt), shared, new))
            self._prev[key] = prompt
        seed = body.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            seen = self._seeds.setdefault(key, {})
            # Distinct seeds count turns folded out of the history; the history's own count covers a
            # trajectory that moved here from another server mid-way.
            return max(turn, seen.setdefault(seed, len(seen)))
        return turn

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

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

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
        messages = body.get("messages", [])
        question, turn = _chat_question(messages)
        prompt, new = chat_prompt(messages) if self.measure_prefix else (b"", 0)
        turn = self._observe(body, question, prompt, new, turn)
        reply = self.policy(ScriptedRequest("chat", question, turn, body))
        if fault == "garbage":
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{n}", "type": "function", "function": {"name": "serch", "arguments": "{\"query\": "}}]}
        elif reply.tool and self.tool_format != "native":
            text = text_tool_call(reply, self.tool_format) if reply.raw is None else reply.raw
            message = {"role": "assistant", "content": _cut_at_stop(text, body.get("stop"))}
        elif reply.tool:
            message = {"role": "assistant", "content": reply.thought or None, "tool_calls": [
                {"id": f"call_{n}", "type": "function",
                 "function": {"name": reply.tool, "arguments": orjson.dumps(reply.args).decode()}}]}
        else:
            message = {"role": "assistant", "content": _cut_at_stop(reply.raw or reply.thought, body.get("stop"))}
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
        data, new = completion_prompt(prompt) if self.measure_prefix else (b"", 0)
        turn = self._observe(body, question, data, new, turn)
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
    p.add_argument("--loop-titles", default="", help="comma-separated titles the loop policy visits")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS))
    p.add_argument("--hang-s", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="scripted")
    p.add_argument("--tool-format", choices=TOOL_FORMATS, default="native",
                   help="native tool_calls, or calls written into the message text")
    p.add_argument("--stats-file", help="on SIGTERM/SIGINT, write the server's stats() here as JSON, then exit")
    a = p.parse_args(argv)
    if a.policy == "oracle":
        if not a.out:
            p.error("--policy oracle needs --out (the data directory with a questions table)")
        policy: Policy = load_oracle(a.out)
    else:
        policy = LoopPolicy(a.loop_turns, titles=[t for t in a.loop_titles.split(",") if t] or None)
    faults = FaultPlan(rate=a.fault_rate, kinds=tuple(k for k in a.fault_kinds.split(",") if k), seed=a.seed,
                       hang_s=a.hang_s)
    server = ScriptedServer(policy, host=a.host, port=a.port, latency_s=a.latency_ms / 1000, faults=faults,
                            model=a.model, tool_format=a.tool_format)

    async def serve() -> None:
        import signal

        await server.start_async()
        print(f"scripted server listening on {server.url}", flush=True)
        done = asyncio.Event()
        if a.stats_file:
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, done.set)
        await done.wait()
        with open(a.stats_file, "wb") as f:
            f.write(orjson.dumps(server.stats()))
        await server.stop_async()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
