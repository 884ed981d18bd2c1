"""The agent's tools (search, visit, answer) as OpenAI-style JSON schemas: one definition.

The rollout sends exactly these to the teacher and the export writes exactly these into the
training data's ``tools`` column, so a student trains on the tool descriptions the teacher saw.
Their arguments mirror the typed ``turns.tool_args`` struct (storage/schemas.py ``TOOL_ARGS``).
"""

from __future__ import annotations

from typing import Any

TOOL_NAMES = ("search", "visit", "answer")

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
