"""Prefect tasks: thin wrappers that call one method of a stage object and return its stats.

There is no Prefect result cache: a batch's completion marker (``hopforge.stage``) is the
one skip rule, for the CLI and the flows alike. A task killed half-way through its batch
left either its whole group of shards or nothing (group commits), so re-running the same
command redoes exactly the unfinished batches. Stage modules are imported inside the task
(through :func:`hopforge.stage.get_stage`), so a Dask or Ray worker imports only what it runs.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from hopforge.config import Config
from hopforge.stage import Batch, StageRun, conclude, execute_batch, get_stage


def configure(t: Task, cfg: Config, *, talks_to_teacher: bool) -> Task:
    """Retries with exponential backoff (``flows.retry_delay_s`` doubling, 20 % jitter) for tasks
    that call the teacher; CPU-bound tasks fail at once (a retry would fail the same way)."""
    fc = cfg.flows
    retries = fc.task_retries if talks_to_teacher else 0
    return t.with_options(
        retries=retries,
        retry_delay_seconds=[fc.retry_delay_s * 2**i for i in range(retries)] if retries else 0,
        retry_jitter_factor=0.2 if retries else None,
    )


@task(name="batch", task_run_name="{stage}[{label}]", cache_policy=NO_CACHE, persist_result=False)
def batch_task(stage: str, run: StageRun, batch: Batch, label: str) -> dict[str, Any]:
    """Run one batch of ``stage`` (skipped at once when its completion marker exists)."""
    return execute_batch(get_stage(stage), run, batch).to_dict()


@task(name="finish", task_run_name="{stage}[finish]", cache_policy=NO_CACHE, persist_result=False)
def finish_task(stage: str, run: StageRun, results: list[dict[str, Any]], batches: int, t0: float
                ) -> dict[str, Any]:
    """Merge the batches' stats, run the stage's whole-table step, record the stage complete."""
    st = get_stage(stage)
    return conclude(run, st, [st.stats_type.from_dict(r) for r in results], batches, t0).to_dict()
