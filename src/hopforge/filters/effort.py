"""Effort and size filter: enough tool calls to be multi-hop, few enough tokens to train on."""

from __future__ import annotations

from hopforge.storage.episodes import Episode
from hopforge.filters.steps import KEEP, Decision, Filter


class EffortFilter(Filter):
    """``min_tool_calls`` counts search/visit calls (the final ``answer`` is not effort)."""

    name = "effort"

    def __init__(self, min_tool_calls: int, max_tokens: int) -> None:
        super().__init__()
        self.min_tool_calls = min_tool_calls
        self.max_tokens = max_tokens

    def filter(self, episode: Episode) -> Decision:
        n = sum(1 for c in episode.calls() if c.tool_name in ("search", "visit"))
        if n < self.min_tool_calls:
            return Decision(False, "too_few_tool_calls", f"{n} search/visit calls < {self.min_tool_calls}")
        t = episode.trajectory
        tokens = (t.get("tokens_in") or 0) + (t.get("tokens_out") or 0)
        if tokens > self.max_tokens:
            return Decision(False, "too_many_tokens", f"{tokens} tokens > {self.max_tokens}")
        return KEEP
