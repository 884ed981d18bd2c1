"""Teacher clients: one async interface over vLLM, llama.cpp, any OpenAI API, or the scripted server.

:class:`Teacher` owns the HTTP transports (one per endpoint of its
:class:`~hopforge.llm.pool.EndpointPool`), the global bound on requests in
flight, retries, and (for ``cpu``/``vllm`` without ``base_url``, and for
``scripted``) the server it started. One teacher serves a whole stage run:
see :mod:`hopforge.llm.service`. Two transports:

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
from hopforge.llm.pool import Endpoint, EndpointPool
from hopforge.llm.servers import ManagedServer, llama_cpp_command, vllm_command

log = logging.getLogger(__name__)


class TransientError(TeacherError):
    """A failure worth retrying: 5xx/429, timeout, dropped connection, truncated body."""


class EndpointDownError(TransientError):
    """The endpoint refused the connection: nothing listens there (a pool ejects it at once)."""


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
        except aiohttp.ClientConnectorError as e:
            raise EndpointDownError(f"POST {path}: connection failed: nothing listens at {self.base_url}: {e}") from None
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
        self.base_url = url
        self._openai = openai
        self._connect_error = httpx.ConnectError
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
            if isinstance(e.__cause__, self._connect_error):
                raise EndpointDownError(f"POST {path}: connection failed: nothing listens at {self.base_url}: {e}") from None
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
    Requests go to the endpoints of ``pool`` (default: ``transport`` alone).
    """

    def __init__(self, transport: Transport | None, kind: str = "chat", *, backend: str, model: str,
                 max_in_flight: int = 256, retry: Retry | None = None,
                 server: ManagedServer | None = None, scripted: Any = None, pool: EndpointPool | None = None) -> None:
        if pool is None:
            if transport is None:
                raise ValueError("Teacher needs a transport or an endpoint pool")
            pool = EndpointPool([Endpoint(str(getattr(transport, "base_url", "") or backend).rstrip("/"), transport)])
        self.pool = pool
        self.transport = pool.endpoints[0].transport  # the only one unless base_urls lists several
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
            self.pool.endpoints[0].url = self.scripted.url
        if self.server is not None:
            await self.server.__aenter__()
        self.pool.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.aclose()
        if self.server is not None:
            await self.server.__aexit__(*exc)
        if self.scripted is not None:
            await asyncio.to_thread(self.scripted.stop)

    def endpoint_of(self, affinity: str) -> str | None:
        """The endpoint trajectory ``affinity`` is routed to (where its last request went)."""
        return self.pool.endpoint_of(affinity)

    def forget(self, affinity: str) -> None:
        """The trajectory ended: drop its sticky route."""
        self.pool.forget(affinity)

    async def post(self, path: str, body: bytes, affinity: str | None = None) -> tuple[Any, int, float]:
        """POST with the in-flight bound and retries, to the endpoint ``affinity`` (a trajectory id) is
        routed to. Returns (json, retries used, latency ms of the successful attempt). Raises
        TeacherError once retries are exhausted or on a non-retryable error."""
        attempt = 0
        pool = self.pool
        while True:
            generation = self.server.generation if self.server is not None else 0
            async with self.semaphore:
                ep = pool.pick(affinity)
                ep.outstanding += 1
                ep.requests += 1
                self.in_flight += 1
                t0 = time.perf_counter()
                try:
                    resp = await ep.transport.post(path, body)
                    pool.succeeded(ep)
                    return resp, attempt, (time.perf_counter() - t0) * 1e3
                except TransientError as e:
                    err = e
                finally:
                    ep.outstanding -= 1
                    self.in_flight -= 1
            moved = pool.failed(ep, err, down=isinstance(err, EndpointDownError))
            if self.server is not None and self.server.proc is not None and (
                    await self.server.failed_by_restart(generation)):
                # The managed server died under this request or is being restarted: wait for it
                # instead of burning retries.
                await self.server.wait_ready()
                continue
            if attempt >= self.retry.retries:
                where = f"; endpoints: {pool.describe()}" if pool.size > 1 else ""
                raise TeacherError(f"{err} (gave up after {attempt} retries{where})")
            attempt += 1
            if moved:
                # Its endpoint was ejected and another is healthy: go there now (the retry is counted).
                log.debug("retry %d on another endpoint: %s", attempt, err)
                continue
            # Full jitter, outside the semaphore so backing-off requests do not hold slots.
            delay = self._rng.uniform(0, min(self.retry.max_s, self.retry.base_s * 2 ** attempt))
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
    questions table under ``cfg.run.out``). ``teacher.base_urls`` (or ``base_url``)
    attaches to running servers instead of starting one. Stages do not call this per
    batch: they share one teacher per run through :func:`hopforge.llm.service.shared_teacher`.
    """
    t, r = cfg.teacher, cfg.rollout
    backend = t.backend
    server: ManagedServer | None = None
    scripted = None
    urls = t.endpoints()
    if backend == "openai" and not urls:
        raise TeacherError("teacher.backend = 'openai' needs teacher.base_url (e.g. https://api.openai.com/v1) "
                           "or teacher.base_urls (a pool of endpoints)")
    cls = SDKTransport if t.client == "sdk" else LeanTransport
    api_key = t.resolved_api_key()

    def transport(url: str) -> Transport:
        return cls(url, api_key=api_key, timeout_s=r.request_timeout_s, max_connections=r.max_in_flight)

    if urls:
        endpoints = [Endpoint(u.rstrip("/"), transport(u)) for u in urls]
    elif backend == "scripted":
        from hopforge.testing.scripted import LoopPolicy, ScriptedServer, load_oracle

        if policy is None:
            policy = load_oracle(str(cfg.run.out)) if t.scripted_policy == "oracle" else LoopPolicy(20)
        scripted = ScriptedServer(policy, host="127.0.0.1", port=0, model=t.model)
        # The port is known only once the server runs (Teacher.__aenter__ sets the URL).
        endpoints = [Endpoint("scripted", _LazyTransport(lambda: transport(scripted.url)))]
    else:
        cmd = vllm_command(cfg) if backend == "vllm" else llama_cpp_command(cfg)
        url = f"http://{t.host}:{t.port}"
        server = ManagedServer(cmd, f"{url}/health" if backend == "vllm" else f"{url}/v1/models",
                               startup_timeout_s=t.startup_timeout_s, max_restarts=t.max_restarts,
                               log_path=cfg.run.out / "_logs" / f"teacher-{backend}.log")
        endpoints = [Endpoint(url, transport(url))]
    pool = EndpointPool(endpoints, health_check_s=t.health_check_s,
                        headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    return Teacher(None, protocol_kind(t), backend=backend, model=t.model, max_in_flight=r.max_in_flight,
                   retry=Retry(r.retries, r.retry_base_s, r.retry_max_s), server=server, scripted=scripted,
                   pool=pool)


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
async def open_teacher(cfg: Config, given: TextClient | None = None, why: str = "", *,
                       scope: str | None = None) -> AsyncIterator[TextClient]:
    """``given`` (an injected client, e.g. a test double), else the configured teacher.

    With ``scope`` (a stage run's fingerprint) the teacher is the run's shared one
    (:func:`hopforge.llm.service.shared_teacher`): started on first use, left running after
    the block, closed by :func:`hopforge.llm.service.release_teachers` when the run ends.
    Without it, a private teacher is started for the block and stopped after it."""
    if given is not None:
        yield given
        return
    if scope is not None:
        from hopforge.llm.service import shared_teacher

        yield shared_teacher(cfg, scope=scope)
        return
    async with make_teacher(cfg) as client:
        yield client
