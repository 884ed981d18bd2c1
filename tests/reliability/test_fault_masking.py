"""The fault suite with 10 % injected garbage, before and after masking recoverable errors: the share of
trajectories kept by the filter stage with the strict format filter (both caps 0) and with the default
caps, and every bad turn of the export at weight 0 (with its error observation)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hopforge.filters import run_filters
from hopforge.labels.stage import run_labels
from hopforge.publish.export import export_dataset
from hopforge.rollouts import run_rollouts
from hopforge.stage import resolve, selection_for
from hopforge.storage import query_arrow, read_table
from hopforge.testing.scripted import FaultPlan, OraclePolicy, ScriptedServer
from tests.rollouts.rollout_fixtures import QUESTIONS, rollout_cfg, write_wiki

N = 60


def many_questions(n: int) -> list[dict]:
    return [{**QUESTIONS[i % 2], "question_id": f"q{i:03d}", "question": f"{QUESTIONS[i % 2]['question']} (v{i})"}
            for i in range(n)]


def test_ten_percent_garbage_kept_share_before_and_after_masking(tmp_path: Path) -> None:
    out = tmp_path / "out"
    qs = many_questions(N)
    strict = {"filters.max_masked_calls": 0, "filters.max_masked_share": 0.0, "filters.min_tool_calls": 1}
    masking = {"filters.min_tool_calls": 1}
    with ScriptedServer(OraclePolicy(qs), faults=FaultPlan(rate=0.10, kinds=("garbage",), seed=5)) as server:
        cfg = rollout_cfg(out, server.url, **{"rollout.max_in_flight": 8, "rollout.flush_every": 10, **strict})
        write_wiki(out, qs, cfg)
        run_rollouts(cfg)
        injected, requests = server.faults_injected["garbage"], server.requests
    assert 0.05 < injected / requests < 0.15, (injected, requests)
    before = run_filters(cfg)
    after_cfg = rollout_cfg(out, server.url, **{"rollout.max_in_flight": 8, "rollout.flush_every": 10, **masking})
    assert resolve(after_cfg, "rollouts").fingerprint == resolve(cfg, "rollouts").fingerprint  # same trajectories
    after = run_filters(after_cfg)
    rollouts = resolve(cfg, "rollouts").fingerprint
    with_garbage = {r["trajectory_id"] for r in read_table(out, "turns", run=rollouts).to_pylist()
                    if r["parse_error"]}
    assert before.trajectories == after.trajectories == N
    # Strict: every trajectory with a garbage turn is rejected; masking keeps those that recovered.
    assert before.kept == N - len(with_garbage) and before.rejects.get("unparseable_call") == len(with_garbage)
    assert after.kept > before.kept and after.kept + after.rejected == N
    kept_after = set(read_table(out, "kept", run=resolve(after_cfg, "filters").fingerprint)
                     .column("trajectory_id").to_pylist())
    assert all(r["correct"] for r in read_table(out, "kept", run=resolve(after_cfg, "filters").fingerprint).to_pylist())
    run_labels(after_cfg)
    sel = selection_for(resolve(after_cfg, "labels"))
    manifest = export_dataset(after_cfg, "trl", tmp_path / "export", selection=sel)
    rows = query_arrow(out, "SELECT t.trajectory_id, t.turn_index, t.role, t.parse_error, t.error, t.loss_weight "
                            "FROM turns t JOIN kept USING (trajectory_id) ORDER BY 1, 2", selection=sel).to_pylist()
    bad = [r for r in rows if r["parse_error"]]
    obs = [r for r in rows if r["error"]]
    assert bad and len(obs) == len(bad)
    assert all(r["loss_weight"] == 0 for r in bad + obs)
    # ... and in the exported rows: every assistant message that carries an unparsed call weighs 0.
    import pyarrow.parquet as pq

    exported = [m for p in sorted((tmp_path / "export" / "data").glob("*.parquet"))
                for row in pq.read_table(p).to_pylist() for m in row["messages"]]
    # The oracle's every own turn is a structured call; a garbage reply is the assistant message without one.
    garbage_msgs = [m for m in exported if m["role"] == "assistant" and not m["tool_calls"]]
    assert len(garbage_msgs) == len(bad) and all(m["loss_weight"] == 0 and not m["train_on"] for m in garbage_msgs)
    assert manifest["counts"]["masked_assistant_messages"] == len(bad)
    reasons = Counter(read_table(out, "rejects", run=resolve(after_cfg, "filters").fingerprint)
                      .column("reason").to_pylist())
    print(f"\n[reliability] 10% garbage: {requests} requests, {injected} garbage replies, "
          f"{len(with_garbage)}/{N} trajectories with a garbage turn; kept before masking {before.kept}/{N} "
          f"({before.kept / N:.0%}), after {after.kept}/{N} ({after.kept / N:.0%}); rejects after {dict(reasons)}; "
          f"{len(with_garbage & kept_after)} kept trajectories carry {len(bad)} masked turns, all at weight 0 "
          f"(and their {len(obs)} error observations)")
