"""Prefect orchestration: stage flows, the umbrella ``pipeline``, serving on a schedule.

Only wiring lives here; every stage is a plain function in its own package.
Importing this package applies hopforge's Prefect defaults (see
:mod:`hopforge.flows.prefect_env`) before Prefect itself is imported.
"""

from hopforge.flows.prefect_env import apply_prefect_defaults

apply_prefect_defaults()

from hopforge.flows.pipeline import (  # noqa: E402
    STAGES,
    build_graph_flow,
    compose_questions_flow,
    filter_and_label_flow,
    generate_trajectories_flow,
    pipeline,
    publish_flow,
    run_pipeline,
)
from hopforge.flows.serve import serve_pipeline  # noqa: E402

__all__ = [
    "STAGES",
    "apply_prefect_defaults",
    "build_graph_flow",
    "compose_questions_flow",
    "filter_and_label_flow",
    "generate_trajectories_flow",
    "pipeline",
    "publish_flow",
    "run_pipeline",
    "serve_pipeline",
]
