"""A pool of teacher endpoints serving the same model: routing, health checks, ejection.

Routing is least-outstanding-requests (the endpoint with the fewest requests in flight from
this client), made **sticky per trajectory**: a trajectory's first request picks an endpoint
and every later turn goes to the same one while it is healthy, so the server's prefix cache
(vLLM automatic prefix caching) holds that trajectory's history. Balance comes from the
first pick; trajectories are short-lived compared with a run, so it evens out.

Health: a connection refused ejects an endpoint at once; other transient failures (5xx,
timeouts, dropped connections, truncated bodies) eject it after ``eject_after`` in a row.
A background check (``GET /health``, or ``/v1/models`` where ``/health`` is 404) runs every
``health_check_s`` over every endpoint: a failing one is ejected, an ejected one that
answers is re-admitted. A trajectory whose endpoint was ejected moves to another (the
request that failed is retried there and counted as a retry). With every endpoint
ejected, requests still go out (to the least loaded) so they fail and use up their retries
instead of hanging. A pool of one never ejects: there is nowhere else to go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

EJECT_AFTER = 3  # consecutive transient failures that eject an endpoint of a pool


@dataclass(eq=False)
class Endpoint:
    url: str  # as configured, minus a trailing slash
    transport: Any  # hopforge.llm.client.Transport
    outstanding: int = 0  # requests of this client in flight there
    requests: int = 0
    failures: int = 0  # consecutive transient failures
    healthy: bool = True
    ejected_at: float | None = None
    last_error: str | None = None
    ejections: int = 0

    @property
    def root(self) -> str:
        """The server root (health and model listing live there, not under /v1)."""
        u = self.url.rstrip("/")
        return u[:-3] if u.endswith("/v1") else u


@dataclass
class EndpointPool:
    endpoints: list[Endpoint]
    eject_after: int = EJECT_AFTER
    health_check_s: float = 5.0
    health_timeout_s: float = 2.0
    headers: dict[str, str] = field(default_factory=dict)
    _sticky: dict[str, Endpoint] = field(default_factory=dict, init=False)  # trajectory id -> endpoint
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")

    @property
    def size(self) -> int:
        return len(self.endpoints)

    # ------------------------------------------------------------------ routing

    def pick(self, affinity: str | None = None) -> Endpoint:
        """The endpoint for the next request (of trajectory ``affinity``, if given)."""
        if self.size == 1:
            ep = self.endpoints[0]
        else:
            ep = self._sticky.get(affinity) if affinity is not None else None
            if ep is None or not ep.healthy:
                live = [e for e in self.endpoints if e.healthy] or self.endpoints
                ep = min(live, key=lambda e: (e.outstanding, e.requests))
        if affinity is not None:
            self._sticky[affinity] = ep
        return ep

    def endpoint_of(self, affinity: str) -> str | None:
        ep = self._sticky.get(affinity)
        return ep.url if ep is not None else None

    def forget(self, affinity: str) -> None:
        """Drop a finished trajectory's sticky entry."""
        self._sticky.pop(affinity, None)

    # ------------------------------------------------------------------ outcomes

    def succeeded(self, ep: Endpoint) -> None:
        ep.failures = 0

    def failed(self, ep: Endpoint, err: Exception, *, down: bool) -> bool:
        """Record a transient failure at ``ep``; ``down``: the endpoint refused the connection.

        Returns True when the request should move to another endpoint at once (``ep`` is ejected
        and another is healthy), False when it should back off and retry."""
        ep.failures += 1
        ep.last_error = str(err)[:300]
        if self.size > 1 and ep.healthy and (down or ep.failures >= self.eject_after):
            self._eject(ep, ep.last_error)
        return not ep.healthy and any(e.healthy for e in self.endpoints)

    def _eject(self, ep: Endpoint, why: str | None) -> None:
        ep.healthy = False
        ep.ejected_at = time.monotonic()
        ep.ejections += 1
        log.warning("teacher endpoint %s ejected: %s", ep.url, why)

    def _admit(self, ep: Endpoint) -> None:
        if not ep.healthy:
            log.warning("teacher endpoint %s re-admitted", ep.url)
        ep.healthy, ep.failures, ep.ejected_at = True, 0, None

    def describe(self) -> str:
        """One line per endpoint state, for error messages."""
        return "; ".join(f"{e.url} {'healthy' if e.healthy else 'ejected'}"
                         + (f" ({e.last_error})" if e.last_error and not e.healthy else "")
                         for e in self.endpoints)

    def state(self) -> list[dict[str, Any]]:
        return [{"url": e.url, "healthy": e.healthy, "outstanding": e.outstanding, "requests": e.requests,
                 "ejections": e.ejections, "last_error": e.last_error} for e in self.endpoints]

    # ------------------------------------------------------------------ health checks

    async def check(self, ep: Endpoint) -> bool:
        """One health probe: ``GET /health`` (vLLM, the scripted server), else ``GET /v1/models``."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.health_timeout_s))
        for path in ("/health", "/v1/models"):
            try:
                async with self._session.get(ep.root + path, headers=self.headers) as r:
                    if r.status == 404:
                        continue
                    return 200 <= r.status < 300
            except (aiohttp.ClientError, TimeoutError, asyncio.TimeoutError, OSError):
                return False
        return False

    async def check_all(self) -> None:
        results = await asyncio.gather(*(self.check(ep) for ep in self.endpoints))
        for ep, ok in zip(self.endpoints, results, strict=True):
            if ok:
                self._admit(ep)
            elif ep.healthy:
                ep.last_error = "health check failed"
                self._eject(ep, ep.last_error)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.health_check_s)
            try:
                await self.check_all()
            except Exception:  # noqa: BLE001 - a probe bug must not kill the run; requests still route
                log.exception("endpoint health check failed")

    def start(self) -> None:
        """Start the periodic health checks (pools of two or more; call from the owning event loop)."""
        if self.size > 1 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="teacher-endpoint-health")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        for ep in self.endpoints:
            await ep.transport.aclose()
