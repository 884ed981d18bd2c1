"""Filter steps in the datatrove mould: each decides keep or drop with a stable reason.

A :class:`Filter` answers ``filter(episode) -> Decision(keep, reason, detail)``
and counts what it saw. :class:`FilterPipeline` chains filters and hands every
dropped episode to a reject sink with the step's name, so nothing disappears
silently: for every step ``in == kept + rejected``, and the next step's ``in``
is this step's ``kept``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

from hopforge.storage.episodes import Episode


class Decision(NamedTuple):
    keep: bool
    reason: str = ""  # stable snake_case when dropped, e.g. "answer_mismatch"
    detail: str = ""  # human-readable context: values, ids, judge rationale


KEEP = Decision(True)


@dataclass
class StepStats:
    step: str
    rows_in: int = 0
    kept: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())

    def as_dict(self, top: int = 5) -> dict[str, Any]:
        return {
            "step": self.step,
            "in": self.rows_in,
            "kept": self.kept,
            "rejected": self.rejected,
            "top_reasons": [[r, n] for r, n in self.reasons.most_common(top)],
        }


class Filter:
    """Base class: subclasses set ``name`` and implement :meth:`filter`."""

    name = "filter"

    def __init__(self) -> None:
        self.stats = StepStats(self.name)

    def filter(self, episode: Episode) -> Decision:  # pragma: no cover - abstract
        raise NotImplementedError

    async def prepare(self, episodes: Sequence[Episode]) -> None:
        """Optional batch hook run on a chunk's survivors before :meth:`filter` (e.g. LLM judging)."""

    def __call__(self, episode: Episode) -> Decision:
        self.stats.rows_in += 1
        decision = self.filter(episode)
        if decision.keep:
            self.stats.kept += 1
        else:
            self.stats.reasons[decision.reason] += 1
        return decision


RejectSink = Callable[[Episode, Filter, Decision], None]
KeepSink = Callable[[Episode], None]


class FilterPipeline:
    """Runs filters in order over chunks of episodes."""

    def __init__(self, steps: Sequence[Filter], chunk_size: int = 256) -> None:
        self.steps = list(steps)
        self.chunk_size = chunk_size

    async def run(self, episodes: Iterable[Episode], on_keep: KeepSink, on_reject: RejectSink) -> None:
        it = iter(episodes)
        while chunk := list(islice(it, self.chunk_size)):
            alive = chunk
            for step in self.steps:
                await step.prepare(alive)
                survivors = []
                for ep in alive:
                    decision = step(ep)
                    if decision.keep:
                        survivors.append(ep)
                    else:
                        on_reject(ep, step, decision)
                alive = survivors
            for ep in alive:
                on_keep(ep)

    def funnel(self) -> list[dict[str, Any]]:
        return [s.stats.as_dict() for s in self.steps]


def reject_row(episode: Episode, step: Filter, decision: Decision) -> dict[str, Any]:
    """The ``rejects`` row for an episode dropped by ``step``."""
    return {
        "stage": "filter",
        "step": step.name,
        "reason": decision.reason,
        "row_table": "kept",
        "row_id": episode.trajectory_id,
        "detail": f"question {episode.question_id}: {decision.detail}" if decision.detail
        else f"question {episode.question_id}",
    }
