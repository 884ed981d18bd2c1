"""``hopforge env serve``: the offline search environment as a local server for student rollouts.

The same :class:`~hopforge.rollouts.environment.Environment` the teacher searched (search / visit
over one graph run's pages and BM25 index) and the same argument validator
(:func:`hopforge.storage.tools.validate_args`), served two ways from one ASGI app on 127.0.0.1:

* **HTTP/JSON**: ``GET /health``, ``GET /tools`` (the tool schemas), ``POST /search``
  ``{"query": ..., "k": ...}``, ``POST /visit`` ``{"title": ..., "page": ...}`` and
  ``POST /call`` ``{"name": ..., "arguments": {...}}``. A result is ``{"tool", "arguments",
  "observation"}`` (the observation is the text the teacher got) plus ``hits`` for a search.
  Bad arguments: 400 ``{"error": "<validator message>"}``; unknown tool: 404; bad JSON: 400;
  a body over ``max_body_bytes``: 413; over ``max_pending`` calls waiting: 503 (retry).
* **MCP** (the ``mcp`` SDK, streamable HTTP at ``/mcp``): tools ``search`` and ``visit`` with the
  same schemas; a bad argument is a tool result with ``isError`` and the validator's message.

Resources are bounded: tool calls run on at most ``workers`` threads (BM25 scoring releases little
of the GIL; more threads than cores buy nothing), at most ``max_pending`` calls wait for one (a
flood gets 503s, not unbounded memory), the server accepts at most ``max_connections``
connections (uvicorn's ``limit_concurrency``) and MCP at most ``max_sessions`` sessions.
``answer`` is not served: it ends an episode and is scored by the reward
(:mod:`hopforge.publish.rewards`), not by the environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from hopforge.errors import HopforgeError
from hopforge.rollouts.environment import Environment
from hopforge.storage.tools import TOOL_SCHEMAS, validate_args

log = logging.getLogger(__name__)

SERVED_TOOLS = ("search", "visit")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BadToolCall(HopforgeError):
    """A tool call the environment refuses: unknown tool or invalid arguments (the validator's message)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Busy(HopforgeError):
    """More calls are waiting than the server admits."""


@dataclass
class ServerLimits:
    workers: int = 2
    max_pending: int = 256
    max_connections: int = 512
    max_sessions: int = 256
    max_body_bytes: int = 64 * 1024
    max_k: int = 20


class EnvService:
    """Validated, bounded tool calls against one :class:`Environment`."""

    def __init__(self, env: Environment, *, search_k: int = 5, limits: ServerLimits | None = None) -> None:
        self.env = env
        self.search_k = search_k
        self.limits = limits or ServerLimits()
        self._slots = threading.BoundedSemaphore(self.limits.workers)
        self._admitted = 0
        self._lock = threading.Lock()
        self.calls = 0
        self.rejected_busy = 0
        self.tools = [t for t in TOOL_SCHEMAS if t["function"]["name"] in SERVED_TOOLS]

    def validate(self, name: str, arguments: Any) -> dict[str, Any]:
        if name not in SERVED_TOOLS:
            raise BadToolCall(f"unknown tool {name!r}; this environment serves {', '.join(SERVED_TOOLS)} "
                              "(answer ends the episode and is scored by the reward, not served)", 404)
        typed, problem = validate_args(name, arguments if arguments is not None else {}, max_k=self.limits.max_k)
        if problem:
            raise BadToolCall(problem)
        return typed  # type: ignore[return-value]

    def run(self, name: str, typed: dict[str, Any]) -> dict[str, Any]:
        """Execute a validated call (blocking; at most ``workers`` at once)."""
        with self._slots:
            self.calls += 1
            if name == "search":
                k = typed.get("k") or self.search_k
                hits = self.env.search(typed["query"], k)
                return {"tool": name, "arguments": {"query": typed["query"], "k": k},
                        "observation": self.env.render_search(typed["query"], k),
                        "hits": [{"title": h.title, "passage_id": h.passage_id, "snippet": h.snippet,
                                  "score": round(h.score, 4)} for h in hits]}
            page = typed.get("page") or 0
            return {"tool": name, "arguments": {"title": typed["title"], "page": page},
                    "observation": self.env.render_visit(typed["title"], page)}

    async def call(self, name: str, arguments: Any) -> dict[str, Any]:
        """Validate, admit (or refuse with :class:`Busy`), run on a worker thread."""
        typed = self.validate(name, arguments)
        with self._lock:
            if self._admitted >= self.limits.max_pending + self.limits.workers:
                self.rejected_busy += 1
                raise Busy(f"{self._admitted} calls in progress or waiting (max_pending {self.limits.max_pending}); "
                           "retry later")
            self._admitted += 1
        try:
            return await asyncio.to_thread(self.run, name, typed)
        finally:
            with self._lock:
                self._admitted -= 1


# ----------------------------------------------------------------------------- the ASGI app


def build_app(service: EnvService, *, mcp: bool = True, host: str = "127.0.0.1") -> Any:
    """One Starlette app: the HTTP/JSON routes, and MCP at ``/mcp`` (when the ``mcp`` SDK is installed)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    limits = service.limits

    async def read_json(request: Request) -> Any:
        size = int(request.headers.get("content-length") or 0)
        if size > limits.max_body_bytes:
            raise BadToolCall(f"request body of {size} bytes is over the limit of {limits.max_body_bytes}", 413)
        body = await request.body()
        if len(body) > limits.max_body_bytes:
            raise BadToolCall(f"request body is over the limit of {limits.max_body_bytes} bytes", 413)
        try:
            return json.loads(body or b"{}")
        except ValueError as e:
            raise BadToolCall(f"request body is not JSON: {e}") from None

    async def respond(name: str, arguments: Any) -> JSONResponse:
        try:
            return JSONResponse(await service.call(name, arguments))
        except BadToolCall as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        except Busy as e:
            return JSONResponse({"error": str(e)}, status_code=503, headers={"Retry-After": "1"})

    def tool_route(name: str):
        async def handler(request: Request) -> JSONResponse:
            try:
                args = await read_json(request)
            except BadToolCall as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            return await respond(name, args)
        return handler

    async def call(request: Request) -> JSONResponse:
        try:
            body = await read_json(request)
        except BadToolCall as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return JSONResponse({"error": "body must be {\"name\": <tool>, \"arguments\": {...}}"}, status_code=400)
        return await respond(body["name"], body.get("arguments"))

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "pages": len(service.env.titles), "passages": service.env.num_passages,
                             "calls": service.calls, "rejected_busy": service.rejected_busy})

    async def tools(_: Request) -> JSONResponse:
        return JSONResponse(service.tools)

    routes = [Route("/health", health, methods=["GET"]), Route("/tools", tools, methods=["GET"]),
              Route("/search", tool_route("search"), methods=["POST"]),
              Route("/visit", tool_route("visit"), methods=["POST"]), Route("/call", call, methods=["POST"])]
    if not mcp:
        return Starlette(routes=routes)
    server = mcp_server(service)
    return server.streamable_http_app(streamable_http_path="/mcp", custom_starlette_routes=routes,
                                      max_sessions=limits.max_sessions, host=host)


def mcp_server(service: EnvService) -> Any:
    """The MCP server (low-level SDK API, so the tools keep storage/tools.py's exact schemas)."""
    from mcp import types
    from mcp.server.lowlevel import Server

    tools = [types.Tool(name=t["function"]["name"], description=t["function"]["description"],
                        input_schema=t["function"]["parameters"]) for t in service.tools]

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            result = await service.call(params.name, params.arguments)
        except (BadToolCall, Busy) as e:
            return types.CallToolResult(content=[types.TextContent(type="text", text=str(e))], is_error=True)
        structured = {k: v for k, v in result.items() if k != "observation"}
        return types.CallToolResult(content=[types.TextContent(type="text", text=result["observation"])],
                                    structured_content=structured)

    # No input-schema hook: validate_args is the one validator, with the teacher's messages.
    return Server("hopforge-env", on_list_tools=list_tools, on_call_tool=call_tool)


def serve(service: EnvService, *, host: str = "127.0.0.1", port: int = 8770, mcp: bool = True,
          log_level: str = "warning") -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    app = build_app(service, mcp=mcp, host=host)
    uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=service.limits.max_connections,
                timeout_keep_alive=30)
