"""Teacher clients: one async interface over vLLM, llama.cpp, any OpenAI API, or the scripted server.

:class:`Teacher` owns the HTTP transport, the global bound on requests in
flight, retries, and (for ``cpu``/``vllm`` without ``base_url``, and for
``scripted``) the server it started. Two transports:

* :class:`LeanTransport` (default): aiohttp + orjson, posting pre-serialised
  bodies. ~0.4 ms CPU per request at 256 in flight.
* :class:`SDKTransport`: the ``openai`` package (``teacher.client = "sdk"``),
  for endpoints with SDK-only quirks; several ms CPU per request (pydantic
  models, httpx), see benchmarks/results/rollout.md.

Retries are a small loop of our own rather than tenacity: the in-flight slot must
be released while backing off (or 256 sleeping retries would block every other
trajectory), a managed server that is restarting must be waited for without
spending retries, and the engine records the retry count per trajectory. tenacity
can do the first (take the slot inside the retried call) but not the second without
a custom stop rule longer than this loop, so it is not a dependency. Backoff is
exponential with full jitter (AWS architecture blog, "Exponential Backoff And
Jitter"), on 5xx/429, timeouts, dropped connections and truncated bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import orjson

from hopforge.config import Config, TeacherConfig
from hopforge.errors import TeacherError
from hopforge.llm.servers import ManagedServer, llama_cpp_command, vllm_command

log = logging.getLogger(__name__)


class TransientError(TeacherError):
    """A failure worth retrying: 5xx/429, timeout, dropped connection, truncated body."""


class Transport(Protocol):
    async def post(self, path: str, body: bytes) -> Any: ...
    async def aclose(self) -> None: ...


class LeanTransport:
    """aiohttp + orjson: bytes in, parsed JSON out."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout_s: float, max_connections: int) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.max_connections),
                timeout=self.timeout, json_serialize=lambda o: orjson.dumps(o).decode(), skip_auto_headers=("User-Agent",))
        return self._session

    async def post(self, path: str, body: bytes) -> Any:
        session = self._open()
        try:
            async with session.post(self.base_url + path, data=body, headers=self.headers) as r:
                data = await r.read()
                status = r.status
        except (TimeoutError, asyncio.TimeoutError):
            raise TransientError(f"POST {path}: timed out after {self.timeout.total}s") from None
        except aiohttp.ClientError as e:
            raise TransientError(f"POST {path}: connection failed: {type(e).__name__}: {e}") from None
        if status >= 500 or status == 429:
            raise TransientError(f"POST {path}: HTTP {status}: {data[:200]!r}")
        if status >= 400:
            raise TeacherError(f"POST {path}: HTTP {status}: {data[:500]!r}")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise TransientError(f"POST {path}: invalid JSON body ({len(data)} bytes): {e}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SDKTransport:
    """The ``openai`` SDK (retries disabled: the Teacher retries)."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout_s: float, max_connections: int) -> None:
        import httpx
        import openai

        url = base_url.rstrip("/")
        self._openai = openai
        self.client = openai.AsyncOpenAI(
            base_url=url if url.endswith("/v1") else url + "/v1", api_key=api_key or "none", max_retries=0,
            timeout=timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)))

    async def post(self, path: str, body: bytes) -> Any:
        openai = self._openai
        params = orjson.loads(body)
        try:
            if path.endswith("/chat/completions"):
                resp = await self.client.chat.completions.create(**params)
            else:
                resp = await self.client.completions.create(**params)
        except openai.APITimeoutError:
            raise TransientError(f"POST {path}: timed out") from None
        except openai.APIConnectionError as e:
            raise TransientError(f"POST {path}: connection failed: {e}") from None
        except openai.APIStatusError as e:
            if e.status_code >= 500 or e.status_code == 429:
                raise TransientError(f"POST {path}: HTTP {e.status_code}") from None
            raise TeacherError(f"POST {path}: HTTP {e.status_code}: {e.message}") from None
        except ValueError as e:  # the SDK's JSON decode of a truncated body
            raise TransientError(f"POST {path}: invalid response: {e}") from None
        return resp.model_dump()

    async def aclose(self) -> None:
        await self.client.close()


@dataclass(slots=True)
class Retry:
    retries: int
    base_s: float
    max_s: float


class TextClient(Protocol):
    """What a judge or composer needs of the teacher: chat messages in, reply text out."""

    async def complete_text(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                            stop: list[str] | None = None) -> str: ...


def protocol_kind(t: TeacherConfig) -> str:
    """"text" (a base model driven through /v1/completions) or "chat" (native tool calls)."""
    return t.protocol if t.protocol != "auto" else ("text" if t.backend == "cpu" else "chat")


class Teacher:
    """An async teacher client; ``async with make_teacher(cfg) as teacher: ...``.

    ``kind`` is "chat" or "text" (see :func:`protocol_kind`); what the requests
    say is the caller's business (the rollout stage builds its tool protocol).
    """

    def __init__(self, transport: Transport, kind: str = "chat", *, backend: str, model: str,
                 max_in_flight: int = 256, retry: Retry | None = None,
                 server: ManagedServer | None = None, scripted: Any = None) -> None:
        self.transport = transport
        self.kind = kind
        self.backend = backend
        self.model = model
        self.retry = retry or Retry(4, 0.5, 30.0)
        self.semaphore = asyncio.Semaphore(max_in_flight)
        self.max_in_flight = max_in_flight
        self.server = server
        self.scripted = scripted
        self.in_flight = 0
        self._rng = random.Random()

    async def __aenter__(self) -> Teacher:
        if self.scripted is not None:
            await asyncio.to_thread(self.scripted.start)
        if self.server is not None:
            await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.aclose()
        if self.server is not None:
            await self.server.__aexit__(*exc)
        if self.scripted is not None:
            await asyncio.to_thread(self.scripted.stop)

    async def post(self, path: str, body: bytes) -> tuple[Any, int, float]:
        """POST with the in-flight bound and retries. Returns (json, retries used, latency ms of the
        successful attempt). Raises TeacherError once retries are exhausted or on a non-retryable error."""
        attempt = 0
        while True:
            async with self.semaphore:
                self.in_flight += 1
                t0 = time.perf_counter()
                try:
                    return await self.transport.post(path, body), attempt, (time.perf_counter() - t0) * 1e3
                except TransientError as e:
                    err = e
                finally:
                    self.in_flight -= 1
            if self.server is not None and self.server.proc is not None and (
                    self.server.restarting or not self.server.alive()):
                # A managed server is being restarted: wait for it instead of burning retries.
                await self.server.wait_ready()
                continue
            if attempt >= self.retry.retries:
                raise TeacherError(f"{err} (gave up after {attempt} retries)")
            # Full jitter, outside the semaphore so backing-off requests do not hold slots.
            delay = self._rng.uniform(0, min(self.retry.max_s, self.retry.base_s * 2 ** attempt))
            attempt += 1
            log.debug("retry %d in %.2fs: %s", attempt, delay, err)
            await asyncio.sleep(delay)

    async def complete_text(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                            stop: list[str] | None = None) -> str:
        """Plain generation (LLM composer, LLM judge): chat messages in, the reply text out.
        On a text-protocol (base model) backend the messages are rendered as a plain prompt."""
        if self.kind == "text":
            prompt = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" if m["role"] != "system"
                                 else m["content"] for m in messages) + "\n\nAssistant:"
            body: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens,
                                    "temperature": temperature}
            path = "/v1/completions"
        else:
            body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
            path = "/v1/chat/completions"
        if stop:
            body["stop"] = stop
        resp, _, _ = await self.post(path, orjson.dumps(body))
        try:
            choice = resp["choices"][0]
            text = choice["text"] if path == "/v1/completions" else choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise TeacherError(f"complete_text: response has no text ({type(e).__name__}: {e})") from None
        return (text or "").strip()


def make_teacher(cfg: Config, *, policy: Any = None) -> Teacher:
    """The teacher ``cfg.teacher`` describes (an async context manager that starts/stops its server).

    ``policy`` overrides the scripted backend's policy (tests); by default the
    scripted server runs ``cfg.teacher.scripted_policy`` (the oracle follows the
    questions table under ``cfg.run.out``).
    """
    t, r = cfg.teacher, cfg.rollout
    backend = t.backend
    server: ManagedServer | None = None
    scripted = None
    base_url = t.base_url
    if backend == "openai" and not base_url:
        raise TeacherError("teacher.backend = 'openai' needs teacher.base_url (e.g. https://api.openai.com/v1)")
    if base_url is None:
        if backend == "scripted":
            from hopforge.testing.scripted import LoopPolicy, ScriptedServer, load_oracle

            if policy is None:
                policy = load_oracle(str(cfg.run.out)) if t.scripted_policy == "oracle" else LoopPolicy(20)
            scripted = ScriptedServer(policy, host="127.0.0.1", port=0, model=t.model)
            base_url = "lazy"  # resolved once the server has a port (see _LazyURL)
        else:
            cmd = vllm_command(cfg) if backend == "vllm" else llama_cpp_command(cfg)
            base_url = f"http://{t.host}:{t.port}"
            server = ManagedServer(cmd, f"{base_url}/health" if backend == "vllm" else f"{base_url}/v1/models",
                                   startup_timeout_s=t.startup_timeout_s, max_restarts=t.max_restarts,
                                   log_path=cfg.run.out / "_logs" / f"teacher-{backend}.log")
    cls = SDKTransport if t.client == "sdk" else LeanTransport
    api_key = t.resolved_api_key()
    if scripted is not None:
        transport: Transport = _LazyTransport(lambda: cls(scripted.url, api_key=api_key, timeout_s=r.request_timeout_s,
                                                          max_connections=r.max_in_flight))
    else:
        transport = cls(base_url, api_key=api_key, timeout_s=r.request_timeout_s, max_connections=r.max_in_flight)
    return Teacher(transport, protocol_kind(t), backend=backend, model=t.model, max_in_flight=r.max_in_flight,
                   retry=Retry(r.retries, r.retry_base_s, r.retry_max_s), server=server, scripted=scripted)


class _LazyTransport:
    """Creates the real transport on first use (the scripted server's port is known only after start)."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._inner: Transport | None = None

    async def post(self, path: str, body: bytes) -> Any:
        if self._inner is None:
            self._inner = self._factory()
        return await self._inner.post(path, body)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()


@contextlib.asynccontextmanager
async def open_teacher(cfg: Config, given: TextClient | None = None, why: str = "") -> AsyncIterator[TextClient]:
    """``given`` (an injected client, e.g. a test double) or the configured teacher, started for the block."""
    if given is not None:
        yield given
        return
    async with make_teacher(cfg) as client:
        yield client
