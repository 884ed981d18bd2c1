"""Format filter: every call parses, names a real tool with valid arguments, and the episode ends with ``answer``.

A bad call (it did not parse, named an unknown tool, had invalid arguments, or got an error
observation) does not discard the trajectory when the teacher recovered from it: when a valid,
successful call follows every bad one, the trajectory is kept and the bad calls are *masked*
(the label stage gives them, and their error observations, ``loss_weight`` 0). This is the
recipe of the seeds, ToolMind and EEF: over 100-600 turns, a teacher with a 1 % malformed-call
rate leaves most trajectories with one such turn, and dropping them all throws away the
recoveries a student most needs to see. Masking is capped (``filters.max_masked_calls`` and
``filters.max_masked_share`` of the calls): beyond the cap, or when a bad call is never
recovered, the trajectory is rejected with the first bad call's reason, as before masking.
Both caps at 0 restore the strict filter.
"""

from __future__ import annotations

from hopforge.filters.steps import KEEP, Decision, Filter
from hopforge.storage.episodes import TOOLS, Call, Episode
from hopforge.storage.tools import MAX_K, validate_args


def call_problem(c: Call) -> tuple[str, str] | None:
    """(reason, detail) of a bad call, or None for a valid call that did not fail."""
    if c.parse_error:
        return "unparseable_call", f"turn {c.turn_index}: {c.parse_error[:200]}"
    if c.tool_name not in TOOLS:
        return "unknown_tool", f"turn {c.turn_index}: {c.tool_name!r}"
    _typed, problem = validate_args(c.tool_name, c.args, max_k=MAX_K)
    if problem:
        return "invalid_tool_args", f"turn {c.turn_index}: {problem}"
    if c.failed:
        error = (c.observation or {}).get("error") or ""
        return "failed_call", f"turn {c.turn_index}: {str(error)[:200]}"
    return None


class FormatFilter(Filter):
    name = "format"

    def __init__(self, max_masked_calls: int = 3, max_masked_share: float = 0.25) -> None:
        super().__init__()
        self.max_masked_calls = max_masked_calls
        self.max_masked_share = max_masked_share

    def filter(self, episode: Episode) -> Decision:
        status = episode.trajectory.get("status")
        if not episode.turns:
            return Decision(False, "no_turns", "trajectory has no turn rows")
        if status != "answered":
            return Decision(False, f"status_{status or 'missing'}", episode.trajectory.get("error") or "")
        calls = episode.calls()
        bad: list[tuple[Call, str, str]] = []
        unrecovered: list[tuple[Call, str, str]] = []  # bad calls since the last valid, successful call
        for c in calls:
            problem = call_problem(c)
            if problem is None:
                unrecovered = []
                continue
            bad.append((c, *problem))
            unrecovered.append((c, *problem))
        if unrecovered:
            c, reason, detail = unrecovered[0]
            return Decision(False, reason, f"{detail} (not recovered: no valid call after it)")
        if bad:
            if len(bad) > self.max_masked_calls or len(bad) > self.max_masked_share * len(calls):
                c, reason, detail = bad[0]
                return Decision(False, reason, f"{detail} ({len(bad)} bad calls of {len(calls)}; masking keeps "
                                               f"at most {self.max_masked_calls} and {self.max_masked_share:g} "
                                               "of the calls)")
        episode.notes["masked_calls"] = [c.turn_index for c, _, _ in bad]
        answers = [c for c in calls if c.tool_name == "answer"]
        if not answers:
            return Decision(False, "no_final_answer", f"{len(calls)} calls, none is answer")
        last_assistant = max(t["turn_index"] for t in episode.turns if t.get("role") == "assistant")
        if answers[0].turn_index != last_assistant:
            return Decision(False, "turns_after_answer",
                            f"answer at turn {answers[0].turn_index}, last assistant turn {last_assistant}")
        return KEEP
