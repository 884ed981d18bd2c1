"""Filters, turn-level labels, dedup, decontamination and difficulty calibration."""

from hopforge.filters.answers import match_answer, normalize_answer, token_f1
from hopforge.filters.episode import Episode, iter_episodes
from hopforge.filters.run import run_filters, run_labels
from hopforge.filters.steps import Decision, Filter, FilterPipeline

__all__ = [
    "Decision",
    "Episode",
    "Filter",
    "FilterPipeline",
    "iter_episodes",
    "match_answer",
    "normalize_answer",
    "run_filters",
    "run_labels",
    "token_f1",
]
