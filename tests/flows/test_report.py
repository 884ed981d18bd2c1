"""The run summary: the funnel measured from the config's chain of stage runs, stage outcomes,
the markdown artifact and the one-line failure message."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from hopforge.config import load_config
from hopforge.flows.report import (
    StageReport,
    TaskFailure,
    failure_message,
    measure_funnel,
    pipeline_summary,
    render_markdown,
    stage_outcome,
)
from hopforge.storage import write_shard
from hopforge.storage.schemas import schema_for
from hopforge.testing.stages import complete_chain


def _rows(table: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema_for(table))


@pytest.fixture
def chain(tmp_path: Path):
    """rollouts and filters output of one config, recorded complete, beside an older rollout run."""
    cfg = load_config(None, {"run.out": str(tmp_path), "graph.dump": "fixture-wiki.xml"})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    traj = [{"trajectory_id": f"t{i}", "question_id": f"q{i}", "attempt": 0, "status": "answered",
             "tokens_in": 100 * i, "tokens_out": i, "started_at": now, "finished_at": now} for i in range(3)]
    rejects = [{"stage": "filter", "step": "answer", "reason": "answer_mismatch", "row_id": "t1"},
               {"stage": "filter", "step": "answer", "reason": "answer_mismatch", "row_id": "t2"},
               {"stage": "filter", "step": "effort", "reason": "too_few_tool_calls", "row_id": "t0"}]
    runs = complete_chain(cfg, {"rollouts": {"trajectories": _rows("trajectories", traj)},
                                "filters": {"rejects": _rows("rejects", rejects)}})
    # Another config's rollouts (another partition): counted under "all runs" only.
    write_shard(tmp_path, "trajectories", _rows("trajectories", traj[:1]), run_id="rollouts-0123456789ab")
    write_shard(tmp_path, "rejects", _rows("rejects", rejects[:1]), run_id="filters-0123456789ab")
    return cfg, runs


def test_funnel_counts_the_chain_rejects_by_reason_and_tokens(chain) -> None:
    cfg, runs = chain
    f = measure_funnel(cfg)
    assert f["chain"]["trajectories"] == runs["rollouts"].fingerprint
    assert f["chain"]["kept"] == runs["filters"].fingerprint
    assert f["rows"]["trajectories"] == {"run": 3, "all": 4}
    assert f["rows"]["rejects"] == {"run": 3, "all": 4}
    assert f["rows"]["kept"] == {"run": 0, "all": 0}
    assert f["rejects"] == [{"stage": "filter", "reason": "answer_mismatch", "rows": 2},
                            {"stage": "filter", "reason": "too_few_tool_calls", "rows": 1}]
    assert f["tokens"] == {"tokens_in": 300, "tokens_out": 3}


def test_failed_run_markdown_and_message_name_the_task_and_what_did_not_run(chain) -> None:
    cfg, runs = chain
    fp = runs["rollouts"].fingerprint
    rep = StageReport("rollouts", fingerprint=fp, tasks=3, ran=1, skipped=1,
                      failures=[TaskFailure("rollouts[00002]", "Failed", "TeacherError: server died | twice")])
    summary = pipeline_summary(cfg, [rep], ["filters", "labels", "publish"])
    assert not summary["ok"] and summary["held"] is None and summary["empty"] is None
    md = render_markdown(summary)
    assert "Status: **FAILED**" in md
    assert f"| rollouts | `{fp}` | 3 | 1 | 1 | 1 | 0.0 | failed |" in md
    assert "| filter | `answer_mismatch` | 2 |" in md
    assert "| trajectories | 3 | 4 |" in md
    assert "TeacherError: server died / twice" in md  # a '|' would break the table row
    assert "| publish | | – | – | – | – | – | not run |" in md
    msg = failure_message(summary)
    assert msg.startswith("1 task(s) failed: rollouts/rollouts[00002]: TeacherError: server died")
    assert "not run: filters, labels, publish" in msg and "re-run the same command" in msg


def test_a_held_stage_makes_the_run_skipped_with_the_holders_line(chain) -> None:
    cfg, runs = chain
    held = f"rollouts on {cfg.run.out} is held by 'nightly (pid 7 on host a)'; wait for it or pass --wait"
    done = StageReport("graph", fingerprint=runs["graph"].fingerprint, tasks=1, skipped=1)
    summary = pipeline_summary(cfg, [done], ["rollouts", "filters"], held)
    assert not summary["ok"] and summary["held"] == held and not summary["failures"]
    assert failure_message(summary) == f"skipped: {held}"
    md = render_markdown(summary)
    assert "Status: **SKIPPED**" in md and f"Skipped: {held}" in md
    assert "| rollouts | | – | – | – | – | – | not run |" in md


@pytest.mark.parametrize(("report", "outcome"), [
    (StageReport("graph", tasks=4, ran=4), "ran"),
    (StageReport("graph", tasks=4, ran=1, skipped=3), "ran"),
    (StageReport("graph", tasks=4, skipped=4), "skipped (complete)"),
    (StageReport("graph", tasks=1, ran=1, empty="the graph has 0 links"), "nothing to do: the graph has 0 links"),
    (StageReport("questions", empty="the graph has 0 links"), "skipped: the graph has 0 links"),
    (StageReport("graph", tasks=4, ran=3, failures=[TaskFailure("graph[00001]", "Crashed", "killed")]), "failed"),
])
def test_stage_outcome(report: StageReport, outcome: str) -> None:
    assert stage_outcome(report.to_dict()) == outcome


def test_stage_report_round_trips_through_json_dict() -> None:
    rep = StageReport("graph", fingerprint="graph-0123456789ab", tasks=2, ran=2,
                      failures=[TaskFailure("graph[00001]", "Crashed", "killed")], stats={"pages": 3},
                      held=None, empty=None)
    assert StageReport.from_dict(rep.to_dict()) == rep
    assert not rep.ok
    held = StageReport("rollouts", held="rollouts on /x is held by 'y'")
    assert StageReport.from_dict(held.to_dict()).held == held.held and held.ok
