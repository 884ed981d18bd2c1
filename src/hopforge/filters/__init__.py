"""filters: trajectory-level filters (format, effort, degeneration, correctness, duplicates) and the
question-level ones (near-duplicate questions, decontamination, difficulty)."""

from hopforge.filters.run import run_filters
from hopforge.filters.steps import Decision, Filter, FilterPipeline

__all__ = ["Decision", "Filter", "FilterPipeline", "run_filters"]
