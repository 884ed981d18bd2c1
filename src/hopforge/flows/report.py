"""What a pipeline run did: per-stage task outcomes and the data funnel.

Everything here is plain data (JSON-able dicts) computed from Prefect states and
from the tables themselves, so the CLI, the Prefect artifact and a test all see
the same numbers. The funnel is measured from the manifests and tables of the
run (not from the stages' return values), so it is also right after a resumed
run in which some tasks were replayed from cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.compute as pc

from hopforge.config import Config
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
    tasks: int = 0
    ran: int = 0  # executed in this flow run
    cached: int = 0  # replayed from a previous run's persisted result
    failures: list[TaskFailure] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # the stage's stats, summed over tasks
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageReport:
        return cls(**{**d, "failures": [TaskFailure(**f) for f in d.get("failures", [])]})


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def merge_stats(parts: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Sum the numeric leaves of several stats dicts (nested dicts merge key by key,
    e.g. ``rejects`` by reason); any other leaf keeps its last value."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in (part or {}).items():
            prev = out.get(key)
            if isinstance(value, Mapping):
                out[key] = merge_stats([prev if isinstance(prev, Mapping) else {}, value])
            elif _number(value) and _number(prev):
                out[key] = prev + value
            else:
                out[key] = value
    return out


def measure_funnel(cfg: Config) -> dict[str, Any]:
    """Rows per table (this run and all runs), rejects by stage and reason, and
    teacher tokens spent by this run's trajectories."""
    out, run = cfg.run.out, cfg.run_id
    rows: dict[str, dict[str, int]] = {}
    for table in FUNNEL_TABLES:
        entries = read_manifest(out, table)
        rows[table] = {"run": sum(e.rows for e in entries if e.run == run), "all": sum(e.rows for e in entries)}
    rejects: list[dict[str, Any]] = []
    rj = read_table(out, "rejects", run=run, columns=["stage", "reason"]) if rows["rejects"]["run"] else None
    if rj is not None and rj.num_rows:
        counts = rj.group_by(["stage", "reason"]).aggregate([("reason", "count")])
        rejects = sorted(({"stage": s, "reason": r, "rows": n} for s, r, n in
                          zip(*(counts.column(c).to_pylist() for c in ("stage", "reason", "reason_count")),
                              strict=True)), key=lambda d: (d["stage"], -d["rows"], d["reason"]))
    tokens = {"tokens_in": 0, "tokens_out": 0}
    if rows["trajectories"]["run"]:
        tr = read_table(out, "trajectories", run=run, columns=["tokens_in", "tokens_out"])
        tokens = {c: int(pc.sum(tr.column(c)).as_py() or 0) for c in tokens}
    return {"run_id": run, "config_hash": cfg.config_hash(), "out": str(out), "rows": rows,
            "rejects": rejects, "tokens": tokens}


def pipeline_summary(cfg: Config, stages: list[StageReport], skipped: list[str]) -> dict[str, Any]:
    failures = [{"stage": s.stage, **asdict(f)} for s in stages for f in s.failures]
    return {"ok": not failures, "funnel": measure_funnel(cfg), "stages": [s.to_dict() for s in stages],
            "failures": failures, "skipped_stages": skipped}


def failure_message(summary: Mapping[str, Any]) -> str:
    """One line for the flow's final state: how many tasks failed, the first reasons."""
    fails = summary["failures"]
    head = "; ".join(f"{f['stage']}/{f['task']}: {f['reason']}" for f in fails[:3])
    more = f" (+{len(fails) - 3} more)" if len(fails) > 3 else ""
    skipped = f"; not run: {', '.join(summary['skipped_stages'])}" if summary["skipped_stages"] else ""
    return (f"{len(fails)} task(s) failed: {head}{more}{skipped}. "
            "Finished tasks are saved: re-run the same command to retry only the failed ones.")


def render_markdown(summary: Mapping[str, Any]) -> str:
    """The Prefect artifact: stage outcomes, the funnel, rejects by reason, tokens."""
    f = summary["funnel"]
    lines = [f"# hopforge run `{f['run_id']}`", "",
             f"Status: **{'completed' if summary['ok'] else 'FAILED'}** · config `{f['config_hash'][:12]}` · "
             f"out `{f['out']}`", "", "## Stages", "",
             "| stage | tasks | ran | cached | failed | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for s in summary["stages"]:
        lines.append(f"| {s['stage']} | {s['tasks']} | {s['ran']} | {s['cached']} | {len(s['failures'])} | "
                     f"{s['seconds']:.1f} |")
    for name in summary["skipped_stages"]:
        lines.append(f"| {name} | – | – | – | – | not run |")
    lines += ["", "## Funnel (rows)", "", "| table | this run | all runs |", "|---|---:|---:|"]
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

