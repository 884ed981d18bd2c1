"""The Prefect flows: one per stage, and the umbrella ``pipeline``.

Each stage flow asks the stage for its plan (``plan_*``), submits one task per
batch, waits for all of them, and reports every task's outcome: a failed batch
never cancels the others, and a stage with failures returns a ``Failed`` state
whose data is its :class:`~hopforge.flows.report.StageReport` (reasons
included). ``pipeline`` runs the stages in data-flow order and stops before a
stage whose input is incomplete; its final state and a markdown artifact
summarise the run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import Task, flow
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture, wait
from prefect.states import Failed, State

from hopforge.config import Config, load_config
from hopforge.errors import ConfigError
from hopforge.flows import tasks
from hopforge.flows.digest import file_digest, tables_digest
from hopforge.flows.report import (
    StageReport,
    TaskFailure,
    failure_message,
    merge_stats,
    pipeline_summary,
    render_markdown,
)
from hopforge.flows.runners import cluster_for, make_task_runner

# The tables each task kind reads (its cache key includes their manifests' digest).
READS: dict[str, tuple[str, ...]] = {
    "build_graph": ("pages", "links_raw", "redirects_raw", "ingest_batches"),
    "compose": ("nodes", "links", "pages"),
    "roll_out": ("questions", "pages", "redirects"),
    "filters": ("questions", "trajectories", "turns"),
    "labels": ("trajectories", "turns", "kept"),
    "publish": ("questions", "trajectories", "turns", "turn_labels", "kept"),
}


def _reason(state: State) -> str:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as e:  # the result itself could not be read
        exc = e
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name


def _gather(stage: str, submitted: Sequence[tuple[str, PrefectFuture]]) -> tuple[StageReport, list[dict]]:
    """Wait for every future; count ran/cached; record each failure with its reason."""
    wait([f for _, f in submitted])
    report = StageReport(stage, tasks=len(submitted))
    stats = []
    for label, fut in submitted:
        state = fut.state
        if state.is_completed():
            if state.name == "Cached":
                report.cached += 1
            else:
                report.ran += 1
            stats.append(state.result())
        else:
            report.failures.append(TaskFailure(task=label, state=state.name, reason=_reason(state)))
    return report, stats


def _submit_batches(t: Task, cfg: Config, batches: Sequence[Any], upstream: str) -> list[tuple[str, PrefectFuture]]:
    width = max(4, len(str(len(batches))))
    return [(f"{i:0{width}d}", t.submit(cfg, b, upstream, label=f"{i:0{width}d}")) for i, b in enumerate(batches)]


def _single(stage: str, t: Task, *args: Any, **kwargs: Any) -> tuple[StageReport, dict]:
    report, stats = _gather(stage, [(t.name, t.submit(*args, **kwargs))])
    return report, (stats[0] if stats else {})


def _combine(stage: str, parts: dict[str, tuple[StageReport, Any]], t0: float) -> StageReport:
    """One report for a stage made of several task kinds; stats keyed by kind."""
    total = StageReport(stage, seconds=time.monotonic() - t0)
    for kind, (rep, stats) in parts.items():
        total.tasks += rep.tasks
        total.ran += rep.ran
        total.cached += rep.cached
        total.failures += rep.failures
        total.stats[kind] = merge_stats(stats) if isinstance(stats, list) else stats
    return total


def _finish(report: StageReport) -> dict | State:
    if report.ok:
        return report.to_dict()
    msg = "; ".join(f"{f.task}: {f.reason}" for f in report.failures[:3])
    return Failed(message=f"{len(report.failures)}/{report.tasks} task(s) failed: {msg}", data=report.to_dict())


@flow(name="build_graph", validate_parameters=False)
def build_graph_flow(cfg: Config, refresh: bool = False) -> dict:
    """Ingest the dump in batches (one task each), then resolve links into the CSR graph."""
    from hopforge.graph import plan_ingest

    t0 = time.monotonic()
    batches = plan_ingest(cfg)
    ingest = tasks.configure(tasks.ingest_task, cfg, talks_to_teacher=False, refresh=refresh)
    parts: dict[str, tuple[StageReport, Any]] = {
        "ingest": _gather("build_graph", _submit_batches(ingest, cfg, batches, file_digest(cfg.graph.dump)))}
    if parts["ingest"][0].ok:
        build = tasks.configure(tasks.build_graph_task, cfg, talks_to_teacher=False, refresh=refresh)
        parts["build_graph"] = _single("build_graph", build, cfg, tables_digest(cfg.run.out, READS["build_graph"]))
    return _finish(_combine("build_graph", parts, t0))


@flow(name="compose_questions", validate_parameters=False)
def compose_questions_flow(cfg: Config, refresh: bool = False) -> dict:
    """Walk the graph and compose questions, one task per question batch."""
    from hopforge.synth import plan_questions

    t0 = time.monotonic()
    batches = plan_questions(cfg)
    compose = tasks.configure(tasks.compose_task, cfg, talks_to_teacher=cfg.synth.composer == "llm", refresh=refresh)
    parts = {"compose": _gather("compose_questions", _submit_batches(
        compose, cfg, batches, tables_digest(cfg.run.out, READS["compose"])))}
    return _finish(_combine("compose_questions", parts, t0))


@flow(name="generate_trajectories", validate_parameters=False)
def generate_trajectories_flow(cfg: Config, refresh: bool = False) -> dict:
    """Let the teacher play the search agent, one task per batch of questions not yet done."""
    from hopforge.rollouts import plan_rollouts

    t0 = time.monotonic()
    batches = plan_rollouts(cfg)
    roll = tasks.configure(tasks.roll_out_task, cfg, talks_to_teacher=True, refresh=refresh)
    parts = {"roll_out": _gather("generate_trajectories", _submit_batches(
        roll, cfg, batches, tables_digest(cfg.run.out, READS["roll_out"])))}
    return _finish(_combine("generate_trajectories", parts, t0))


@flow(name="filter_and_label", validate_parameters=False)
def filter_and_label_flow(cfg: Config, refresh: bool = False) -> dict:
    """Filter trajectories (kept / rejects with reasons), then label turns with loss weights."""
    t0 = time.monotonic()
    judge = cfg.filters.llm_judge or cfg.filters.difficulty_k > 0
    filt = tasks.configure(tasks.filters_task, cfg, talks_to_teacher=judge, refresh=refresh)
    parts = {"filters": _single("filter_and_label", filt, cfg, tables_digest(cfg.run.out, READS["filters"]))}
    if parts["filters"][0].ok:
        lab = tasks.configure(tasks.labels_task, cfg, talks_to_teacher=cfg.filters.label_judge, refresh=refresh)
        parts["labels"] = _single("filter_and_label", lab, cfg, tables_digest(cfg.run.out, READS["labels"]))
    return _finish(_combine("filter_and_label", parts, t0))


def export_dir(cfg: Config) -> Path:
    """Where ``publish`` writes the dataset and its card: OUT/export/<format>."""
    return Path(cfg.run.out) / "export" / cfg.export.format


@flow(name="publish", validate_parameters=False)
def publish_flow(cfg: Config, refresh: bool = False) -> dict:
    """Export the kept trajectories (cfg.export.format) and render the data card beside them."""
    t0 = time.monotonic()
    dest = export_dir(cfg)
    # The export is only a view of the tables: if someone deleted it, write it again.
    refresh = refresh or not dest.exists()
    upstream = tables_digest(cfg.run.out, READS["publish"])
    exp = tasks.configure(tasks.export_task, cfg, talks_to_teacher=False, refresh=refresh)
    parts = {"export": _single("publish", exp, cfg, cfg.export.format, str(dest), upstream)}
    if parts["export"][0].ok:
        card = tasks.configure(tasks.card_task, cfg, talks_to_teacher=False, refresh=refresh)
        parts["card"] = _single("publish", card, cfg, str(dest), upstream)
    return _finish(_combine("publish", parts, t0))


STAGE_FLOWS: dict[str, Callable[..., Any]] = {
    "graph": build_graph_flow,
    "questions": compose_questions_flow,
    "rollouts": generate_trajectories_flow,
    "filters": filter_and_label_flow,
    "publish": publish_flow,
}
STAGES = tuple(STAGE_FLOWS)


def select_stages(stages: Sequence[str] | None) -> list[str]:
    """Validate a stage selection and put it in data-flow order (None = all)."""
    if not stages:
        return list(STAGES)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(STAGES)}")
    return [s for s in STAGES if s in stages]


def _artifact_key(run_id: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return "hopforge-funnel-" + re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")


@flow(name="pipeline")
def pipeline(config_path: str | None = None, overrides: dict[str, Any] | None = None,
             stages: list[str] | None = None, refresh: bool = False) -> dict:
    """Run the stages in order: graph -> questions -> rollouts -> filters -> publish.

    Parameters are JSON (a config path and dotted-key overrides) so the flow can
    be deployed and scheduled; secrets stay in the config file or environment.
    Stops before a stage whose upstream stage had failed tasks; finished tasks
    are persisted, so re-running the same parameters resumes.
    """
    cfg = load_config(config_path, overrides)
    selected = select_stages(stages)
    reports: list[StageReport] = []
    skipped: list[str] = []
    with cluster_for(cfg) as address:
        for i, name in enumerate(selected):
            stage_flow = STAGE_FLOWS[name].with_options(task_runner=make_task_runner(cfg, address, name))
            state = stage_flow(cfg, refresh=refresh, return_state=True)
            data = state.result(raise_on_failure=False)
            if isinstance(data, dict):
                report = StageReport.from_dict(data)
            else:  # the stage flow itself raised (e.g. its plan found no input)
                report = StageReport(stage_flow.name, failures=[TaskFailure(task="plan", state=state.name,
                                                                 reason=_reason(state))])
            reports.append(report)
            if not report.ok:
                skipped = [STAGE_FLOWS[s].name for s in selected[i + 1:]]
                break
    summary = pipeline_summary(cfg, reports, skipped)
    artifact_id = create_markdown_artifact(markdown=render_markdown(summary), key=_artifact_key(cfg.run_id),
                                           description=f"hopforge funnel of run {cfg.run_id}")
    summary["artifact"] = {"key": _artifact_key(cfg.run_id), "id": str(artifact_id)}
    if summary["ok"]:
        return summary
    return Failed(message=failure_message(summary), data=summary)


def run_pipeline(config_path: str | Path | None, overrides: dict[str, Any] | None = None,
                 stages: Sequence[str] | None = None, refresh: bool = False) -> tuple[dict, State]:
    """Run :func:`pipeline` in this process (ephemeral Prefect API unless PREFECT_API_URL
    is set) and return its summary and final state. A hopforge error raised by the
    flow itself (bad config) is re-raised as is."""
    state = pipeline(str(config_path) if config_path else None, overrides, list(stages) if stages else None,
                     refresh, return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    return data, state
