"""Prefect tasks: thin wrappers that call one stage entry point and return its stats.

Every task is cached on ``INPUTS + TASK_SOURCE`` (deliberately *not* Prefect's
default, which adds the flow run id and so never hits across runs) with its
result persisted under ``OUT/_prefect/results``. Re-running the same command
after a crash therefore replays finished tasks from disk and executes only the
missing ones; the stages' content-addressed ids and skip-done logic are the
second line of defence for a task killed half-way through its shard.

A task's inputs are: the :class:`~hopforge.config.Config` (hashed as JSON, with
secrets masked), the batch descriptor from the stage's ``plan_*`` function,
and ``upstream``, a digest of the manifests of the tables the task reads
(:mod:`hopforge.flows.digest`). ``label`` only names the task run in the UI and
is excluded from the key, because plan order is not part of a batch's identity.
Stage modules are imported inside the task so that a Dask/Ray worker imports
only what it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from hopforge.config import Config

CACHE_POLICY = (INPUTS - "label") + TASK_SOURCE


def result_dir(cfg: Config) -> Path:
    """Where task results (and so the resume cache) live: beside the data they describe,
    so deleting OUT also forgets the cache and nothing stale is replayed."""
    return Path(cfg.run.out).resolve() / "_prefect" / "results"


def configure(t: Task, cfg: Config, *, talks_to_teacher: bool, refresh: bool = False) -> Task:
    """Bind a task to this run: result storage, refresh, and retries with exponential
    backoff (``flows.retry_delay_s`` doubling, 20 % jitter) for tasks calling the teacher."""
    fc = cfg.flows
    retries = fc.task_retries if talks_to_teacher else 0
    return t.with_options(
        result_storage=result_dir(cfg),
        persist_result=True,
        cache_policy=CACHE_POLICY,
        refresh_cache=refresh,
        retries=retries,
        retry_delay_seconds=[fc.retry_delay_s * 2**i for i in range(retries)] if retries else 0,
        retry_jitter_factor=0.2 if retries else None,
    )


_COMMON: dict[str, Any] = {"cache_policy": CACHE_POLICY, "persist_result": True}


@task(name="ingest_batch", task_run_name="ingest[{label}]", **_COMMON)
def ingest_task(cfg: Config, batch: Any, upstream: str, label: str) -> dict:
    from hopforge.graph import ingest_batch

    return ingest_batch(cfg, batch)


@task(name="build_graph", task_run_name="build_graph", **_COMMON)
def build_graph_task(cfg: Config, upstream: str, label: str = "graph") -> dict:
    from hopforge.graph import build_graph

    return build_graph(cfg)


@task(name="compose_batch", task_run_name="compose[{label}]", **_COMMON)
def compose_task(cfg: Config, batch: Any, upstream: str, label: str) -> dict:
    from hopforge.synth import compose_batch

    return compose_batch(cfg, batch)


@task(name="roll_out_batch", task_run_name="roll_out[{label}]", **_COMMON)
def roll_out_task(cfg: Config, batch: Any, upstream: str, label: str) -> dict:
    from hopforge.rollouts import roll_out_batch

    return roll_out_batch(cfg, batch)


@task(name="run_filters", task_run_name="filters", **_COMMON)
def filters_task(cfg: Config, upstream: str, label: str = "filters") -> dict:
    from hopforge.filters import run_filters

    return run_filters(cfg)


@task(name="run_labels", task_run_name="labels", **_COMMON)
def labels_task(cfg: Config, upstream: str, label: str = "labels") -> dict:
    from hopforge.labels.stage import run_labels

    return run_labels(cfg)


@task(name="export_dataset", task_run_name="export[{fmt}]", **_COMMON)
def export_task(cfg: Config, fmt: str, dest: str, upstream: str, label: str = "export") -> dict:
    from hopforge.publish.export import export_dataset

    # publish owns OUT/export/<format>: a re-publish after new data replaces it.
    return export_dataset(cfg, fmt, Path(dest), overwrite=True)


@task(name="render_card", task_run_name="card", **_COMMON)
def card_task(cfg: Config, dest: str, upstream: str, label: str = "card") -> dict:
    from hopforge.publish.card import render_card

    return {"card": str(render_card(cfg, Path(dest)))}
