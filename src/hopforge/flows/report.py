"""What a pipeline run did: per-stage task outcomes and the data funnel.

Everything here is plain data (JSON-able dicts) computed from Prefect states and
from the tables themselves, so the CLI, the Prefect artifact and a test all see
the same numbers. The funnel is measured from the tables of the config's chain of
stage runs (not from the stages' return values), so it is also right after a
resumed run in which finished batches were skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hopforge.config import Config
from hopforge.errors import HopforgeError
from hopforge.storage.shards import read_manifest, read_table

# Data-flow order, for the funnel table.
FUNNEL_TABLES = ("pages", "redirects", "links", "nodes", "walks", "questions", "trajectories", "turns",
                 "kept", "turn_labels", "difficulty", "rejects")


@dataclass
class TaskFailure:
    task: str
    state: str  # Failed | Crashed | Cancelled
    reason: str  # "ExceptionType: message" of the last attempt


@dataclass
class StageReport:
    stage: str
    fingerprint: str = ""
    tasks: int = 0
    ran: int = 0  # batches executed in this flow run
    skipped: int = 0  # batches already complete (their completion marker exists)
    failures: list[TaskFailure] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # the stage's typed stats, merged over batches
    seconds: float = 0.0
    empty: str | None = None  # why the stage had nothing to produce (the stages after it skip)
    held: str | None = None  # another process holds the stage's lease: the stage did not run (its line)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageReport:
        return cls(**{**d, "failures": [TaskFailure(**f) for f in d.get("failures", [])]})


def measure_funnel(cfg: Config) -> dict[str, Any]:
    """Rows per table (this config's chain of stage runs, and all runs), rejects by stage and
    reason, and teacher tokens spent by the chain's trajectories."""
    from hopforge.stage import STAGES, resolve, selection_for

    out = cfg.run.out
    try:
        sel = selection_for(resolve(cfg, STAGES[-1]))
    except HopforgeError:  # e.g. the dump is missing: there is no chain to measure
        sel = {"rejects": []}
    rows: dict[str, dict[str, int]] = {}
    for table in FUNNEL_TABLES:
        entries = read_manifest(out, table)
        mine = set(sel.get(table, ()))
        rows[table] = {"run": sum(e.rows for e in entries if e.run in mine), "all": sum(e.rows for e in entries)}
    rejects: list[dict[str, Any]] = []
    parts = [read_table(out, "rejects", run=r, columns=["stage", "reason"]) for r in sel["rejects"]]
    rj = pa.concat_tables(parts) if parts else None
    if rj is not None and rj.num_rows:
        counts = rj.group_by(["stage", "reason"]).aggregate([("reason", "count")])
        rejects = sorted(({"stage": s, "reason": r, "rows": n} for s, r, n in
                          zip(*(counts.column(c).to_pylist() for c in ("stage", "reason", "reason_count")),
                              strict=True)), key=lambda d: (d["stage"], -d["rows"], d["reason"]))
    tokens = {"tokens_in": 0, "tokens_out": 0}
    if rows["trajectories"]["run"]:
        tr = read_table(out, "trajectories", run=sel["trajectories"][0], columns=["tokens_in", "tokens_out"])
        tokens = {c: int(pc.sum(tr.column(c)).as_py() or 0) for c in tokens}
    return {"out": str(out), "chain": {t: v[0] for t, v in sel.items() if t != "rejects" and v},
            "rows": rows, "rejects": rejects, "tokens": tokens}


def pipeline_summary(cfg: Config, stages: list[StageReport], not_run: list[str], held: str | None = None
                     ) -> dict[str, Any]:
    failures = [{"stage": s.stage, **asdict(f)} for s in stages for f in s.failures]
    empty = next((s.empty for s in stages if s.empty), None)
    return {"ok": not failures and held is None, "funnel": measure_funnel(cfg), "stages": [s.to_dict() for s in stages],
            "failures": failures, "skipped_stages": not_run, "empty": empty, "held": held}


def failure_message(summary: Mapping[str, Any]) -> str:
    """One line for the flow's final state: how many tasks failed, the first reasons."""
    if summary.get("held"):
        return f"skipped: {summary['held']}"
    fails = summary["failures"]
    head = "; ".join(f"{f['stage']}/{f['task']}: {f['reason']}" for f in fails[:3])
    more = f" (+{len(fails) - 3} more)" if len(fails) > 3 else ""
    skipped = f"; not run: {', '.join(summary['skipped_stages'])}" if summary["skipped_stages"] else ""
    return (f"{len(fails)} task(s) failed: {head}{more}{skipped}. "
            "Finished batches are saved: re-run the same command to retry only the failed ones.")


def stage_outcome(s: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> str:
    """``ran`` / ``skipped (complete)`` / ``nothing to do: …`` / ``failed`` for one stage report
    (``previous``: the report of the stage before it, whose "nothing to do" this one inherits)."""
    if s["failures"]:
        return "failed"
    if s.get("empty"):  # no batch planned: skipped because of an empty upstream (or nothing to plan)
        return f"nothing to do: {s['empty']}" if s["tasks"] else f"skipped: {s['empty']}"
    if s["tasks"] and s["skipped"] == s["tasks"]:
        return "skipped (complete)"
    return "ran"


def render_markdown(summary: Mapping[str, Any]) -> str:
    """The Prefect artifact: stage outcomes, the funnel, rejects by reason, tokens."""
    f = summary["funnel"]
    status = "completed" if summary["ok"] else ("SKIPPED" if summary.get("held") else "FAILED")
    lines = [f"# hopforge pipeline on `{f['out']}`", "", f"Status: **{status}**", ""]
    if summary.get("held"):
        lines += [f"Skipped: {summary['held']}", ""]
    lines += ["## Stages", "", "| stage | fingerprint | batches | ran | skipped | failed | seconds | outcome |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    prev = None
    for s in summary["stages"]:
        lines.append(f"| {s['stage']} | `{s['fingerprint']}` | {s['tasks']} | {s['ran']} | {s['skipped']} | "
                     f"{len(s['failures'])} | {s['seconds']:.1f} | {stage_outcome(s, prev)} |")
        prev = s
    for name in summary["skipped_stages"]:
        lines.append(f"| {name} | | – | – | – | – | – | not run |")
    lines += ["", "## Funnel (rows)", "", "| table | this chain | all runs |", "|---|---:|---:|"]
    for table, n in f["rows"].items():
        lines.append(f"| {table} | {n['run']} | {n['all']} |")
    if f["rejects"]:
        lines += ["", "## Rejects by reason", "", "| stage | reason | rows |", "|---|---|---:|"]
        lines += [f"| {r['stage']} | `{r['reason']}` | {r['rows']} |" for r in f["rejects"]]
    t = f["tokens"]
    lines += ["", f"Teacher tokens: {t['tokens_in']:,} in, {t['tokens_out']:,} out."]
    if summary["failures"]:
        lines += ["", "## Failed tasks", "", "| stage | task | state | reason |", "|---|---|---|---|"]
        lines += [f"| {x['stage']} | {x['task']} | {x['state']} | {x['reason'].replace('|', '/')[:300]} |"
                  for x in summary["failures"]]
    return "\n".join(lines) + "\n"
