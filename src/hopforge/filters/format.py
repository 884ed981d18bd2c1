"""Format filter: every call parses, names a real tool with valid arguments, and the episode ends with ``answer``."""

from __future__ import annotations

from hopforge.storage.episodes import TOOLS, Episode
from hopforge.storage.tools import MAX_K, validate_args
from hopforge.filters.steps import KEEP, Decision, Filter


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
            _typed, problem = validate_args(c.tool_name, c.args, max_k=MAX_K)
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
