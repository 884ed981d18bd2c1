"""filters: trajectory-level filters (format, effort, degeneration, correctness, duplicates, with-tools
difficulty) in the filter stage, and question-level ones (near-duplicates, decontamination, closed-book
difficulty) in the screen stage that runs before rollouts."""

from hopforge.filters.screen import ScreenStage, ScreenStats
from hopforge.filters.stage import FilterStage, FilterStats, run_filters
from hopforge.filters.steps import Decision, Filter, FilterPipeline

__all__ = ["Decision", "Filter", "FilterPipeline", "FilterStage", "FilterStats", "ScreenStage", "ScreenStats",
           "run_filters"]
