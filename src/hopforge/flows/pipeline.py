"""The Prefect flows: one ``stage`` flow that runs any stage, and the umbrella ``pipeline``.

The stage flow does what :func:`hopforge.stage.run_stage` does for the CLI, with Prefect's
task runner as the executor: take the stage's lease, check its inputs, plan, submit one
task per batch, wait for all of them (a failed batch never cancels the others), then the
whole-table step. A stage with failures returns a ``Failed`` state whose data is its
:class:`~hopforge.flows.report.StageReport`. ``pipeline`` runs the stages in data-flow
order, stops before a stage whose input is incomplete, and skips (with the reason) the
stages after one that had nothing to produce; its final state and a markdown artifact
summarise the run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait
from prefect.states import Completed, Failed, State

from hopforge.config import Config, load_config
from hopforge.errors import LeaseHeldError
from hopforge.flows import tasks
from hopforge.flows.report import StageReport, TaskFailure, failure_message, pipeline_summary, render_markdown
from hopforge.flows.runners import cluster_for, make_task_runner
from hopforge.stage import (
    STAGES,
    Empty,
    close_run,
    get_stage,
    owner_name,
    prepare,
    resolve,
    select_stages,
)
from hopforge.storage import Lease


def _reason(state: State) -> str:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as e:  # the result itself could not be read
        exc = e
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name


@flow(name="stage", flow_run_name="{name}", validate_parameters=False)
def stage_flow(name: str, cfg: Config, wait_for_lease: bool | float = False) -> dict | State:
    """Run stage ``name`` for ``cfg``: one task per batch on the flow's task runner."""
    stage = get_stage(name)
    run = resolve(cfg, name)
    t0 = time.monotonic()
    report = StageReport(name, fingerprint=run.fingerprint)
    try:
        lease = Lease(run.out, name, owner=owner_name("hopforge flow")).acquire(wait=wait_for_lease)
    except LeaseHeldError as e:  # not an error of this run: reported, without a traceback in the flow's log
        report.held = str(e)
        return report.to_dict()
    with lease:
        run, skip, done = prepare(run)
        if done is not None:
            report.stats, report.empty = done.to_dict(), skip or done.empty
            report.skipped = done.batches if skip is None else 0
            report.tasks = report.skipped
            return report.to_dict()
        try:
            batches = stage.plan(run)
        except Empty as e:
            stats = stage.stats_type(empty=e.reason)
            run.mark_complete(stats, 0)
            report.stats, report.empty = stats.to_dict(), e.reason
            return report.to_dict()
        t = tasks.configure(tasks.batch_task, cfg, talks_to_teacher=stage.talks_to_teacher(cfg))
        try:
            futures = [(b.label, t.submit(name, run, b, label=b.label)) for b in batches]
            wait([f for _, f in futures])
        finally:
            # Batches on the thread runner shared this process's teacher: stop it (Dask and Ray
            # workers hold their own, see docs/rollout.md).
            close_run(run)
        results = []
        for label, fut in futures:
            state = fut.state
            if state.is_completed():
                results.append(state.result())
            else:
                report.failures.append(TaskFailure(task=f"{name}[{label}]", state=state.name, reason=_reason(state)))
        report.tasks = len(batches)
        report.skipped = sum(1 for r in results if r.get("batches_skipped"))
        report.ran = len(results) - report.skipped
        if report.failures:
            report.seconds = time.monotonic() - t0
            msg = "; ".join(f"{f.task}: {f.reason}" for f in report.failures[:3])
            return Failed(message=f"{len(report.failures)}/{report.tasks} task(s) failed: {msg}",
                          data=report.to_dict())
        fin = tasks.configure(tasks.finish_task, cfg, talks_to_teacher=False).submit(
            name, run, results, len(batches), t0)
        fin.wait()
        fin_state = fin.state
        if not fin_state.is_completed():
            report.failures.append(TaskFailure(task=f"{name}[finish]", state=fin_state.name,
                                               reason=_reason(fin_state)))
            return Failed(message=f"{name}[finish]: {_reason(fin_state)}", data=report.to_dict())
        stats = fin_state.result()
        report.stats, report.empty, report.seconds = stats, stats.get("empty"), time.monotonic() - t0
        return report.to_dict()


def _artifact_key(cfg: Config) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    name = Path(cfg.run.out).resolve().name
    return "hopforge-funnel-" + re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


@flow(name="pipeline")
def pipeline(config_path: str | None = None, overrides: dict[str, Any] | None = None,
             stages: list[str] | None = None, refresh: bool = False, wait_for_lease: bool | float = False
             ) -> dict | State:
    """Run the stages in order: graph -> questions -> screen -> rollouts -> filters -> labels -> publish.

    Parameters are JSON (a config path and dotted-key overrides) so the flow can be deployed
    and scheduled; secrets stay in the config file or environment. ``refresh`` starts a new
    generation of the selected stages (new fingerprints; the old output stays). Stops before
    a stage whose upstream stage failed; stages after one with nothing to produce are skipped
    with its reason. Another process running a stage on the same OUT (a cron tick overlapping
    a long run) ends this run at that stage, skipped, with the holder named.
    """
    from hopforge.stage import bump_generation

    cfg = load_config(config_path, overrides)
    selected = select_stages(stages)
    if refresh:
        bump_generation(cfg.run.out, selected)
    reports: list[StageReport] = []
    not_run: list[str] = []
    held: str | None = None
    with cluster_for(cfg) as address:
        for i, name in enumerate(selected):
            sf = stage_flow.with_options(task_runner=make_task_runner(cfg, address, name))
            state = sf(name, cfg, wait_for_lease, return_state=True)
            data = state.result(raise_on_failure=False)
            if isinstance(data, dict) and data.get("held"):
                held, not_run = data["held"], selected[i:]
                break
            if isinstance(data, dict):
                report = StageReport.from_dict(data)
            else:  # the stage flow itself raised (bad input: a truncated dump, a missing upstream)
                report = StageReport(name, failures=[TaskFailure(task="plan", state=state.name,
                                                                 reason=_reason(state))])
            reports.append(report)
            if not report.ok:
                not_run = selected[i + 1:]
                break
    summary = pipeline_summary(cfg, reports, not_run, held)
    key = _artifact_key(cfg)
    artifact_id = create_markdown_artifact(markdown=render_markdown(summary), key=key,
                                           description=f"hopforge funnel of {cfg.run.out}")
    summary["artifact"] = {"key": key, "id": str(artifact_id)}
    if summary["ok"]:
        return summary
    if held is not None:  # another run holds a stage (a cron tick overlapping a long run): skipped, not failed
        return Completed(message=failure_message(summary), data=summary)
    return Failed(message=failure_message(summary), data=summary)


def run_pipeline(config_path: str | Path | None, overrides: dict[str, Any] | None = None,
                 stages: Sequence[str] | None = None, refresh: bool = False,
                 wait_for_lease: bool | float = False) -> tuple[dict, State]:
    """Run :func:`pipeline` in this process (ephemeral Prefect API unless PREFECT_API_URL
    is set) and return its summary and final state. A hopforge error raised by the
    flow itself (bad config) is re-raised as is."""
    state = pipeline(str(config_path) if config_path else None, overrides, list(stages) if stages else None,
                     refresh, wait_for_lease, return_state=True)
    data = state.result(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    return data, state


__all__ = ["STAGES", "pipeline", "run_pipeline", "stage_flow"]
