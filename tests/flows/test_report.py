"""The run summary: stats merging, the funnel measured from tables, the markdown artifact."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from hopforge.config import load_config
from hopforge.flows.report import (
    StageReport,
    TaskFailure,
    failure_message,
    measure_funnel,
    merge_stats,
    pipeline_summary,
    render_markdown,
)
from hopforge.storage import write_shard
from hopforge.storage.schemas import schema_for


def test_merge_stats_sums_numbers_and_nested_reasons() -> None:
    merged = merge_stats([{"rows_in": 10, "rejects": {"answer_mismatch": 2}, "model": "a", "ok": True},
                          {"rows_in": 5, "rejects": {"answer_mismatch": 1, "too_few_tool_calls": 4}, "model": "b"},
                          None])
    assert merged == {"rows_in": 15, "rejects": {"answer_mismatch": 3, "too_few_tool_calls": 4}, "model": "b",
                      "ok": True}


def _rows(table: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema_for(table))


def test_funnel_counts_this_run_rejects_by_reason_and_tokens(tmp_path: Path) -> None:
    cfg = load_config(None, {"run.out": str(tmp_path), "run.run_id": "now"})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    traj = [{"trajectory_id": f"t{i}", "question_id": f"q{i}", "attempt": 0, "status": "answered",
             "tokens_in": 100 * i, "tokens_out": i, "started_at": now, "finished_at": now} for i in range(3)]
    write_shard(tmp_path, "trajectories", _rows("trajectories", traj), run_id="now")
    write_shard(tmp_path, "trajectories", _rows("trajectories", traj[:1]), run_id="older")
    rejects = [{"stage": "filter", "step": "answer", "reason": "answer_mismatch", "row_id": "t1"},
               {"stage": "filter", "step": "answer", "reason": "answer_mismatch", "row_id": "t2"},
               {"stage": "filter", "step": "effort", "reason": "too_few_tool_calls", "row_id": "t0"}]
    write_shard(tmp_path, "rejects", _rows("rejects", rejects), run_id="now")

    f = measure_funnel(cfg)
    assert f["rows"]["trajectories"] == {"run": 3, "all": 4}
    assert f["rows"]["kept"] == {"run": 0, "all": 0}
    assert f["rejects"] == [{"stage": "filter", "reason": "answer_mismatch", "rows": 2},
                            {"stage": "filter", "reason": "too_few_tool_calls", "rows": 1}]
    assert f["tokens"] == {"tokens_in": 300, "tokens_out": 3}

    rep = StageReport("generate_trajectories", tasks=3, ran=1, cached=1,
                      failures=[TaskFailure("0002", "Failed", "TeacherError: server died | twice")])
    summary = pipeline_summary(cfg, [rep], ["filter_and_label", "publish"])
    assert not summary["ok"]
    md = render_markdown(summary)
    assert "| generate_trajectories | 3 | 1 | 1 | 1 |" in md
    assert "| filter | `answer_mismatch` | 2 |" in md
    assert "| trajectories | 3 | 4 |" in md
    assert "TeacherError: server died / twice" in md  # a '|' would break the table row
    assert "| publish | – | – | – | – | not run |" in md
    msg = failure_message(summary)
    assert msg.startswith("1 task(s) failed: generate_trajectories/0002: TeacherError: server died")
    assert "not run: filter_and_label, publish" in msg and "re-run the same command" in msg


def test_stage_report_round_trips_through_json_dict() -> None:
    rep = StageReport("build_graph", tasks=2, ran=2, failures=[TaskFailure("0001", "Crashed", "killed")],
                      stats={"ingest": {"pages": 3}})
    assert StageReport.from_dict(rep.to_dict()) == rep
    assert not rep.ok
