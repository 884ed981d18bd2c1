"""Hand-built rows shaped like the real stages' output (fictional text, no Wikipedia content)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from hopforge.storage import ShardWriter
from hopforge.storage.schemas import schema_for

SCRIPT = '<script>alert("pwned")</script>'


def _ev(hop, src, dst, anchor, sentence):
    return {"hop": hop, "src": src, "dst": dst, "anchor": anchor, "sentence": sentence}


def write_small_run(out: Path) -> Path:
    """Three questions, three trajectories, labelled turns, kept rows, rejects and difficulty."""
    path1 = ["Rivermouth Observatory", "Halden Vale", "Orrin Castellane"]
    with ShardWriter(out, "walks", run_id="r1") as w:
        w.write({"walk_id": "w1", "seed": 7, "hops": 2, "start_strategy": "pagerank", "path": path1,
                 "path_ids": [11, 12, 13],
                 "evidence": [_ev(1, path1[0], path1[1], "Halden", "The observatory stands above Halden, a valley town."),
                              _ev(2, path1[1], path1[2], "Orrin Castellane",
                                  "The vale was surveyed by Orrin Castellane in 1871.")]})
    checks_ok = [{"name": "answer_unique", "passed": True, "detail": "1 candidate"},
                 {"name": "no_answer_leak", "passed": True, "detail": None}]
    with ShardWriter(out, "questions", run_id="r1") as w:
        w.write({"question_id": "q1", "walk_id": "w1",
                 "question": "Who surveyed the valley below the observatory at the river mouth?",
                 "answer": "Orrin Castellane", "answer_aliases": ["O. Castellane", "Castellane"],
                 "answer_type": "entity", "path": path1, "hops": 2,
                 "evidence": [_ev(1, path1[0], path1[1], "Halden", "The observatory stands above Halden, a valley town."),
                              _ev(2, path1[1], path1[2], "Orrin Castellane",
                                  "The vale was surveyed by Orrin Castellane in 1871.")],
                 "answer_facts": [{"key": "born", "value": "1840"}], "composer": "template",
                 "checks": checks_ok, "passed": True, "seed": 7})
        w.write({"question_id": "q2", "walk_id": "w2", "question": "Which harbour lies three links from the old mill?",
                 "answer": "Port Saelin", "answer_aliases": [], "answer_type": "entity",
                 "path": ["Old Mill", "Kest", "Lorn Bay", "Port Saelin"], "hops": 3, "evidence": [],
                 "composer": "template", "checks": checks_ok, "passed": True, "seed": 8})
        w.write({"question_id": "q3", "walk_id": "w3", "question": f"Which page says {SCRIPT} twice?",
                 "answer": f"Tag {SCRIPT}", "answer_aliases": [SCRIPT], "answer_type": "entity",
                 "path": ["A", "B"], "hops": 1,
                 "evidence": [_ev(1, "A", "B", "B", f"A links to B with {SCRIPT} inline.")],
                 "composer": "template",
                 "checks": [{"name": "answer_unique", "passed": False, "detail": f"2 candidates {SCRIPT}"}],
                 "passed": False, "seed": 9})
    with ShardWriter(out, "trajectories", run_id="r1") as w:
        for tid, qid, attempt, status, final, turns in [("t1", "q1", 0, "answered", "Orrin Castellane", 9),
                                                         ("t3", "q1", 1, "answered", "Halden", 5),
                                                         ("t2", "q2", 0, "turn_limit", None, 40)]:
            w.write({"trajectory_id": tid, "question_id": qid, "attempt": attempt, "teacher_backend": "llamacpp",
                     "teacher_model": "gemma-3-270m", "status": status, "final_answer": final,
                     "num_turns": turns, "num_tool_calls": turns // 2, "tokens_in": 1000 * turns,
                     "tokens_out": 50 * turns, "retries": 0, "errors": 0, "context_events": 1 if tid == "t1" else 0,
                     "wall_seconds": 3.5})
    sys_prompt = "You are a search agent. Tools: search, visit, answer."
    t1 = [
        {"role": "system", "content": sys_prompt},
        {"role": "user", "content": "Who surveyed the valley below the observatory at the river mouth?"},
        {"role": "assistant", "reasoning": "I should find the observatory first.", "tool_name": "search",
         "tool_args": {"query": "observatory river mouth", "k": 5}, "tokens_in": 300, "tokens_out": 40,
         "latency_ms": 812.5},
        {"role": "tool", "tool_name": "search", "content": f"1. Rivermouth Observatory - sits above Halden {SCRIPT}"},
        {"role": "assistant", "reasoning": "Halden is the valley; visit it.", "tool_name": "visit",
         "tool_args": {"title": "Halden Vale", "page": 1}, "latency_ms": 640.0, "context_action": "summarized"},
        {"role": "tool", "tool_name": "visit",
         "content": "Halden Vale is a valley. It was surveyed by orrin castellane in 1871 and mapped later."},
        {"role": "assistant", "reasoning": "Let me double-check.", "tool_name": "visit",
         "tool_args": {"title": "Orrin Castellane", "page": 1}, "latency_ms": 500.0},
        {"role": "tool", "tool_name": "visit", "content": "Orrin Castellane (1840-1901) was a surveyor."},
        {"role": "assistant", "reasoning": "Answer found.", "tool_name": "answer",
         "tool_args": {"text": "Orrin Castellane"}, "latency_ms": 300.0},
    ]
    labels = [  # (valid_call, progress, judge_label, loss_weight)
        (None, None, None, 0.0), (None, None, None, 0.0), (True, True, "essential", 1.0), (None, None, None, 0.0),
        (True, True, "essential", 1.0), (None, None, None, 0.0), (True, False, "not_necessary", 0.5),
        (None, None, None, 0.0), (True, True, "essential", 1.0)]
    with ShardWriter(out, "turns", run_id="r1") as w:
        for i, t in enumerate(t1):
            w.write({"trajectory_id": "t1", "question_id": "q1", "turn_index": i, "context_action": "none",
                     "tool_call_id": f"c{i}" if t["role"] in ("assistant", "tool") else None, **t})
        w.write_many([{"trajectory_id": "t3", "question_id": "q1", "turn_index": 0, "role": "user",
                       "content": "Who surveyed ..."},
                      {"trajectory_id": "t3", "question_id": "q1", "turn_index": 1, "role": "assistant",
                       "content": "", "parse_error": "no tool call found", "raw_output": "<tool>broken"}])
    with ShardWriter(out, "turn_labels", run_id="l1") as w:
        for i, (valid, progress, judge, lw) in enumerate(labels):
            w.write({"trajectory_id": "t1", "turn_index": i, "valid_call": valid, "progress": progress,
                     "judge_label": judge, "judge_rationale": "needed" if judge else None, "loss_weight": lw,
                     "label_policy": "rules+judge"})
    with ShardWriter(out, "kept", run_id="f1") as w:
        w.write({"trajectory_id": "t1", "question_id": "q1", "correct": True, "f1": 1.0,
                 "judge_verdict": "correct", "judge_rationale": "exact match"})
    with ShardWriter(out, "rejects", run_id="f1") as w:
        w.write_many([
            {"stage": "filter", "step": "answer_match", "reason": "answer_mismatch", "row_table": "trajectories",
             "row_id": "t3", "detail": "final 'Halden' != 'Orrin Castellane'"},
            {"stage": "filter", "step": "turn_budget", "reason": "turn_limit_reached", "row_table": "trajectories",
             "row_id": "t2", "detail": "40 turns"},
            {"stage": "questions", "step": "answer_unique", "reason": "ambiguous_answer", "row_table": "questions",
             "row_id": "q3", "detail": f"two candidates {SCRIPT}"},
            {"stage": "ingest", "step": "parse_page", "reason": "parser_timeout", "row_table": "pages",
             "row_id": "4242", "detail": "page 4242 took over 30 s"},
        ])
    with ShardWriter(out, "difficulty", run_id="d1") as w:
        w.write_many([{"question_id": "q1", "k": 4, "solve_rate_no_tools": 0.0, "solve_rate_tools": 0.5,
                       "teacher_model": "gemma-3-270m"},
                      {"question_id": "q2", "k": 4, "solve_rate_no_tools": 0.25, "solve_rate_tools": 1.0,
                       "teacher_model": "gemma-3-270m"}])
    return out


def write_many_questions(out: Path, n: int, rows_per_shard: int = 250_000) -> Path:
    """``n`` questions built column-wise with pyarrow (seconds for a million rows)."""
    schema = schema_for("questions")
    step = rows_per_shard
    with ShardWriter(out, "questions", run_id="big", rows_per_shard=rows_per_shard) as w:
        for start in range(0, n, step):
            idx = range(start, min(n, start + step))
            cols = {
                "question_id": pa.array([f"q{i:08d}" for i in idx]),
                "walk_id": pa.array([f"w{i:08d}" for i in idx]),
                "question": pa.array([f"Which entity is reached from start page {i}?" for i in idx]),
                "answer": pa.array([f"Entity {i}" for i in idx]),
                "hops": pa.array([2 + i % 4 for i in idx], pa.int32()),
                "passed": pa.array([i % 10 != 0 for i in idx]),
                "composer": pa.array(["template"] * len(idx)),
            }
            table = pa.table({f.name: cols.get(f.name, pa.nulls(len(idx), f.type)) for f in schema}, schema=schema)
            w.write_table(table)
    return out
