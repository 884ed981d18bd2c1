"""The agent's tools (search, visit, answer): their JSON schemas and their argument validator, one definition.

The rollout sends exactly these to the teacher and the export writes exactly these into the
training data's ``tools`` column, so a student trains on the tool descriptions the teacher saw.
Their arguments mirror the typed ``turns.tool_args`` struct (storage/schemas.py ``TOOL_ARGS``).
"""

from __future__ import annotations

from typing import Any

TOOL_NAMES = ("search", "visit", "answer")
# The environment never needs more than these; longer arguments are cut, not refused.
MAX_QUERY_CHARS = 500
MAX_TITLE_CHARS = 300
MAX_ANSWER_CHARS = 2000
# Stored calls are validated against the widest k the schema allows to be recorded.
MAX_K = 100

TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the offline Wikipedia snapshot. Returns titles, passage ids and snippets.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Keywords to search for."},
                    "k": {"type": "integer", "description": "Number of results (default 5).", "minimum": 1},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "visit",
            "description": "Read a Wikipedia page by exact title. Long pages are split; page=1, 2... reads on.",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "description": "The page title, as shown in search results."},
                    "page": {"type": "integer", "description": "0-based page of the text (default 0).",
                             "minimum": 0},
                },
                "required": ["title"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "answer",
            "description": "Give the final answer. Ends the episode.",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string", "description": "The answer, as short as possible."}},
                "required": ["text"],
            },
        },
    },
]


def validate_args(name: str, args: Any, *, max_k: int) -> tuple[dict[str, Any] | None, str | None]:
    """Typed tool args or an error naming the problem. Unknown keys are an error: a
    model that invents parameters should be told so rather than silently obeyed.

    The rollout engine calls it on every model call (``k`` clamped to ``max_k``), the format
    filter and the turn labels on stored calls, so all three agree on what a valid call is."""
    if name not in TOOL_NAMES:
        return None, f"unknown tool {name!r}; the tools are search, visit, answer"
    if not isinstance(args, dict):
        return None, f"{name}: arguments must be a JSON object, got {type(args).__name__}"
    allowed = {"search": {"query", "k"}, "visit": {"title", "page"}, "answer": {"text"}}[name]
    extra = set(args) - allowed
    if extra:
        return None, f"{name}: unknown argument(s) {sorted(extra)}; allowed: {sorted(allowed)}"
    if name == "search":
        q = args.get("query")
        if not isinstance(q, str) or not q.strip():
            return None, "search: 'query' must be a non-empty string"
        k = args.get("k", 5)
        if isinstance(k, str) and k.strip().isdigit():
            k = int(k)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            return None, "search: 'k' must be a positive integer"
        return {"query": q.strip()[:MAX_QUERY_CHARS], "k": min(k, max_k)}, None
    if name == "visit":
        t = args.get("title")
        if not isinstance(t, str) or not t.strip():
            return None, "visit: 'title' must be a non-empty string"
        p = args.get("page", 0)
        if isinstance(p, str) and p.strip().isdigit():
            p = int(p)
        if p is None:
            p = 0
        if not isinstance(p, int) or isinstance(p, bool) or p < 0:
            return None, "visit: 'page' must be an integer >= 0"
        return {"title": t.strip()[:MAX_TITLE_CHARS], "page": p}, None
    text = args.get("text")
    if not isinstance(text, str) or not text.strip():
        return None, "answer: 'text' must be a non-empty string"
    return {"text": text.strip()[:MAX_ANSWER_CHARS]}, None
