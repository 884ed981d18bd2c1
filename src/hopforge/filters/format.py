"""Format filter: every call parses, names a real tool with valid arguments, and the episode ends with ``answer``."""

from __future__ import annotations

from typing import Any

from hopforge.filters.episode import TOOLS, Call, Episode
from hopforge.filters.steps import KEEP, Decision, Filter


def argument_problem(call: Call) -> str | None:
    """Why the call's arguments are invalid for its tool, or None when they are valid."""
    a: dict[str, Any] = call.args
    if call.tool_name == "search":
        if not str(a.get("query") or "").strip():
            return "search without a query"
        if "k" in a and not 1 <= int(a["k"]) <= 100:
            return f"search k={a['k']} outside 1..100"
        extra = set(a) - {"query", "k"}
    elif call.tool_name == "visit":
        if not str(a.get("title") or "").strip():
            return "visit without a title"
        if "page" in a and int(a["page"]) < 0:
            return f"visit page={a['page']} < 0"
        extra = set(a) - {"title", "page"}
    elif call.tool_name == "answer":
        if not str(a.get("text") or "").strip():
            return "answer without text"
        extra = set(a) - {"text"}
    else:
        return None
    return f"{call.tool_name} with arguments of another tool: {sorted(extra)}" if extra else None


class FormatFilter(Filter):
    name = "format"

    def filter(self, episode: Episode) -> Decision:
        status = episode.trajectory.get("status")
        if not episode.turns:
            return Decision(False, "no_turns", "trajectory has no turn rows")
        if status != "answered":
            return Decision(False, f"status_{status or 'missing'}", episode.trajectory.get("error") or "")
        calls = episode.calls()
        for c in calls:
            if c.parse_error:
                return Decision(False, "unparseable_call", f"turn {c.turn_index}: {c.parse_error[:200]}")
            if c.tool_name not in TOOLS:
                return Decision(False, "unknown_tool", f"turn {c.turn_index}: {c.tool_name!r}")
            problem = argument_problem(c)
            if problem:
                return Decision(False, "invalid_tool_args", f"turn {c.turn_index}: {problem}")
        answers = [c for c in calls if c.tool_name == "answer"]
        if not answers:
            return Decision(False, "no_final_answer", f"{len(calls)} calls, none is answer")
        last_assistant = max(t["turn_index"] for t in episode.turns if t.get("role") == "assistant")
        if answers[0].turn_index != last_assistant:
            return Decision(False, "turns_after_answer",
                            f"answer at turn {answers[0].turn_index}, last assistant turn {last_assistant}")
        return KEEP
