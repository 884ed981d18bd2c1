"""Prefect orchestration: the generic stage flow, the umbrella ``pipeline``, serving on a schedule.

Only wiring lives here; every stage is a plain object in its own package (``hopforge.stage``).
Importing this package applies hopforge's Prefect defaults (see
:mod:`hopforge.flows.prefect_env`) before Prefect itself is imported.
"""

from hopforge.flows.prefect_env import apply_prefect_defaults

apply_prefect_defaults()

from hopforge.flows.pipeline import STAGES, pipeline, run_pipeline, stage_flow  # noqa: E402
from hopforge.flows.serve import serve_pipeline  # noqa: E402

__all__ = ["STAGES", "apply_prefect_defaults", "pipeline", "run_pipeline", "serve_pipeline", "stage_flow"]
