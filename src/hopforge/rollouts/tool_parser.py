"""Client-side tool-call parsing: tool calls a server returned as message text.

Servers without a tool-call parser (llama-cpp-python's OpenAI server with most chat formats,
plain text-generation servers) hand back the model's call as ``message.content``. Instruct
models write it in a few shapes, all seen from Qwen2.5-Coder-1.5B-Instruct on llama.cpp:

* Hermes / Qwen: ``<tool_call>{"name": "search", "arguments": {...}}</tool_call>``
* a bare object: ``{"name": "search", "arguments": {"query": "...", "k": 5}}``, also inside
  ``<tools>...</tools>`` (the tag the chat template wraps the tool list in) or a code fence
* the template's escaped braces copied literally: ``{{"name": ..., "arguments": {{...}}}}``

and then usually go on to write an invented tool result. :func:`extract_calls` finds the
calls; the protocol takes the first, validates its arguments with the one validator
(``storage.tools.validate_args``) like a native call, drops the rest of the text from the
history, and sends :data:`STOP` so the server stops at the call in the first place.

``teacher.tool_parser``: ``"hermes"`` reads ``<tool_call>`` blocks only (an unterminated
last block counts: the stop sequence cuts the closing tag); ``"json"`` reads any JSON
object naming a tool, wrapped or bare. Parsing is total: it never raises, whatever the text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hopforge.storage.tools import TOOL_NAMES

PARSERS = ("none", "hermes", "json")

# Where a model without a server-side parser goes on after its call: the closing tag (hermes
# templates), an invented result in the template's own tags, or a ReAct-style observation.
# At most four: the OpenAI API refuses more.
STOP: dict[str, list[str]] = {
    "hermes": ["</tool_call>", "<tool_response>"],
    "json": ["</tool_call>", "</tools>", "<tool_response>", "\nObservation:"],
}

# What the system prompt adds, so a model whose template ignores `tools` still knows the format.
FORMAT_HINT: dict[str, str] = {
    "hermes": ('To call a tool, write <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call> '
               "and stop; the result comes back in <tool_response> tags."),
    "json": ('To call a tool, write one JSON object {"name": "<tool>", "arguments": {...}} and stop; '
             "the result comes back in <tool_response> tags."),
}

_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")
_DECODER = json.JSONDecoder()


@dataclass(slots=True)
class TextCall:
    name: str
    arguments: Any  # an object, or a JSON string of one (validated later, like a native call)
    start: int  # span of the call in the text (the wrapper tag included, when there is one)
    end: int


def _as_call(obj: Any) -> tuple[str, Any] | None:
    """(name, arguments) when ``obj`` has the shape of a call, else None."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    return name, args


def _objects(text: str, base: int = 0) -> list[tuple[Any, int, int]]:
    """Every top-level JSON object in ``text`` with its span (scanning from each '{' not inside
    an object already found)."""
    found: list[tuple[Any, int, int]] = []
    i = text.find("{")
    while i >= 0:
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except ValueError:  # JSONDecodeError, and RecursionError is not a ValueError: see below
            i = text.find("{", i + 1)
            continue
        except RecursionError:
            return found
        found.append((obj, base + i, base + end))
        i = text.find("{", end)
    return found


def _undouble(text: str) -> str:
    return text.replace("{{", "{").replace("}}", "}")


def _block_call(block: str) -> tuple[str, Any] | str:
    """The call inside one ``<tool_call>`` block, or an error message."""
    body = _FENCE.sub("", block.strip())
    for candidate in (body, _undouble(body)) if "{{" in body else (body,):
        for obj, _s, _e in _objects(candidate):
            call = _as_call(obj)
            if call is not None:
                return call
    snippet = " ".join(body.split())[:120]
    return f"<tool_call> block is not a JSON object with a name and arguments: {snippet!r}"


def extract_calls(text: Any, parser: str) -> tuple[list[TextCall], str | None]:
    """The tool calls written in ``text`` and, when something looked like a call but could not be
    read, why. Never raises."""
    try:
        return _extract(text if isinstance(text, str) else "", parser)
    except Exception as e:  # noqa: BLE001 - total by contract: the engine turns this into a parse error
        return [], f"tool call text could not be parsed ({type(e).__name__})"


def _extract(text: str, parser: str) -> tuple[list[TextCall], str | None]:
    if parser not in ("hermes", "json") or not text:
        return [], None
    calls: list[TextCall] = []
    error: str | None = None
    for m in _TOOL_CALL.finditer(text):
        got = _block_call(m.group(1))
        if isinstance(got, str):
            error = error or got
        else:
            calls.append(TextCall(got[0], got[1], m.start(), m.end()))
    if calls or parser == "hermes":
        if not calls and error is None and "<tool_call" in text:
            error = "a <tool_call> tag without a complete block"
        return calls, error
    # json: any object naming one of the tools, wrapped in <tools>, a fence, or bare. An object with
    # a name and arguments naming no tool is returned too, so the validator says "unknown tool".
    for candidate, doubled in ((text, False), (_undouble(text), True)) if "{{" in text else ((text, False),):
        known: list[TextCall] = []
        other: list[TextCall] = []
        for obj, s, e in _objects(candidate):
            call = _as_call(obj)
            if call is None:
                continue
            # With doubled braces the spans refer to the repaired text: the whole text is the call.
            span = (0, len(text)) if doubled else (s, e)
            if call[0] in TOOL_NAMES:
                known.append(TextCall(call[0], call[1], *span))
            elif "arguments" in obj or "parameters" in obj:
                other.append(TextCall(call[0], call[1], *span))
        if known or other:
            return known or other, None
    return [], None
