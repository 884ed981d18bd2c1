"""A small hand-built run, written through hopforge.storage, shaped like real rollouts.

Five trajectories over four questions: system/user/assistant/tool turns with
typed tool_args and reasoning, turn labels (one harmful call weighted 0, one
trajectory unlabelled), a long trajectory with a rollout context summary for
windowing, one rejected trajectory, question rejects, and difficulty rows.
The text is written for the test (no Wikipedia text).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hopforge.storage import ShardWriter

RUN = "rtest"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SYSTEM = "You are a search agent. Use search, visit and answer. <b>Be brief.</b>"

QUESTIONS = {
    "q1": ("Which river flows through the city where the founder of Acme Lenses was born?", "Varno", 2),
    "q2": ("What is the altitude class of the pass crossed by the road built by the engineer "
           "who designed the Lumen Bridge?", "High alpine", 4),
    "q3": ("Which composer wrote the anthem of the town twinned with Brackwell?", "Ilse Morrow", 3),
    "q4": ("In which year did the observatory named after the astronomer of the Orla survey open?", "1931", 2),
}


def _call(name: str, **args: Any) -> dict[str, Any]:
    full = {"query": None, "k": None, "title": None, "page": None, "text": None}
    full.update(args)
    return full


def _trajectory(tid: str, qid: str, steps: list[tuple[str, dict, str, str | None]], *,
                summary_after: int | None = None) -> list[dict[str, Any]]:
    """steps: (tool, args, observation, reasoning); the last step should be `answer`."""
    q = QUESTIONS[qid][0]
    turns: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": q},
    ]
    for i, (tool, args, obs, reasoning) in enumerate(steps):
        call_id = f"call_{tid}_{i}"
        turns.append({"role": "assistant", "content": "", "reasoning": reasoning, "tool_call_id": call_id,
                      "tool_name": tool, "tool_args": _call(tool, **args), "tokens_in": 300 + 50 * i,
                      "tokens_out": 40})
        turns.append({"role": "tool", "content": obs, "tool_call_id": call_id, "tool_name": tool,
                      "context_action": "truncated" if len(obs) > 200 else "none"})
        if summary_after is not None and i == summary_after:
            turns.append({"role": "user", "content": "[Context summary] The engineer is Petra Vell; "
                          "her road is the Korsa Pass Road.", "context_action": "summarized"})
    rows = []
    for idx, t in enumerate(turns):
        rows.append({"trajectory_id": tid, "question_id": qid, "turn_index": idx, "reasoning": None,
                     "tool_call_id": None, "tool_name": None, "tool_args": None, "raw_output": None,
                     "parse_error": None, "tokens_in": 0, "tokens_out": 0, "latency_ms": 12.5, "error": None,
                     "context_action": "none", **t})
    return rows


def _steps() -> dict[str, tuple[str, list]]:
    return {
        "t1": ("q1", [
            ("search", {"query": "Acme Lenses founder", "k": 5}, "1. Acme Lenses - founded by Jon Brandt\n2. Lens", 
             "The founder is the first hop. Search for the company."),
            ("visit", {"title": "Jon Brandt", "page": 0}, "Jon Brandt (born in Selmar) was an optician.",
             "Brandt was born somewhere; open his page."),
            ("visit", {"title": "Selmar"}, "Selmar is a city on the river Varno.", None),
            ("answer", {"text": "Varno"}, "Answer recorded.", "Selmar lies on the Varno, so the answer is Varno."),
        ]),
        "t2": ("q2", [
            ("search", {"query": "Lumen Bridge engineer"}, "1. Lumen Bridge - designed by Petra Vell", "Find the engineer."),
            ("visit", {"title": "Petra Vell"}, "Petra Vell built the Korsa Pass Road. " + "x" * 210,
             "She built a road; which pass?"),
            ("visit", {"title": "Korsa Pass Road"}, "The road crosses the Korsa Pass.", "Now the pass page."),
            ("search", {"query": "Korsa Pass altitude"}, "1. Korsa Pass - high alpine pass", None),
            ("visit", {"title": "Korsa Pass", "page": 1}, "It is classed as a high alpine pass.",
             "The class is stated here, " + "think " * 300 + "so I can answer."),
            ("answer", {"text": "High alpine"}, "Answer recorded.", "Answer: high alpine."),
        ]),
        "t3": ("q3", [
            ("search", {"query": "Brackwell twin town"}, "1. Brackwell - twinned with Oster", "Search first."),
            ("answer", {"text": "Unknown"}, "Answer recorded.", "I give up."),
        ]),
        "t4": ("q4", [
            ("search", {"query": "Orla survey astronomer"}, "1. Orla survey - led by M. Kade", "Who led it?"),
            ("visit", {"title": "Kade Observatory"}, "The Kade Observatory opened in 1931.", None),
            ("answer", {"text": "1931"}, "Answer recorded.", "It opened in 1931."),
        ]),
        "t5": ("q1", [
            ("search", {"query": "Jon Brandt birthplace"}, "1. Jon Brandt - optician born in Selmar", None),
            ("search", {"query": "Selmar river"}, "1. Selmar - city on the Varno", None),
            ("answer", {"text": "Varno"}, "Answer recorded.", None),
        ]),
    }


KEPT = {"t1": True, "t2": True, "t4": True, "t5": True}
# Per trajectory: (turn_index, judge_label, loss_weight) of assistant turns; t4 is left unlabelled.
HARMFUL = ("t2", 9)  # t2's 4th call (search after the summary) is judged harmful -> weight 0


def build_run(out: Path) -> dict[str, Any]:
    """Write the run to ``out``; returns the source rows for assertions."""
    steps = _steps()
    all_turns: dict[str, list[dict]] = {}
    for tid, (qid, st) in steps.items():
        all_turns[tid] = _trajectory(tid, qid, st, summary_after=2 if tid == "t2" else None)
    kw = {"run_id": RUN, "config_hash": "testhash"}
    with ShardWriter(out, "pages", **kw) as w:
        for i, title in enumerate(["Acme Lenses", "Jon Brandt", "Selmar"]):
            w.write({"page_id": i + 1, "title": title, "ns": 0, "revision_id": 100 + i,
                     "revision_timestamp": T0 - timedelta(days=i), "text": "...", "lead": "...",
                     "source": "enwiki-233.xml.bz2", "infobox": [], "categories": [], "is_disambiguation": False,
                     "is_list": False, "is_date": False, "wikitext_bytes": 10, "red_links": 0})
    with ShardWriter(out, "walks", **kw) as w:
        for qid, (_, _, hops) in QUESTIONS.items():
            w.write({"walk_id": f"w{qid}", "seed": 0, "hops": hops, "start_strategy": "uniform",
                     "path": ["A"] * (hops + 1), "path_ids": [1] * (hops + 1), "evidence": []})
    with ShardWriter(out, "questions", **kw) as w:
        for qid, (q, a, hops) in QUESTIONS.items():
            w.write({"question_id": qid, "walk_id": f"w{qid}", "question": q, "answer": a, "answer_aliases": [],
                     "answer_type": "entity", "path": [], "hops": hops, "evidence": [], "answer_facts": [],
                     "composer": "template", "checks": [], "passed": True, "seed": 0})
    with ShardWriter(out, "trajectories", **kw) as w:
        for tid, (qid, st) in steps.items():
            turns = all_turns[tid]
            w.write({"trajectory_id": tid, "question_id": qid, "attempt": 1 if tid == "t5" else 0,
                     "teacher_backend": "cpu", "teacher_model": "gemma-3-270m", "status": "answered",
                     "final_answer": st[-1][1]["text"], "num_turns": len(turns), "num_tool_calls": len(st),
                     "tokens_in": sum(t["tokens_in"] for t in turns), "tokens_out": sum(t["tokens_out"] for t in turns),
                     "retries": 0, "errors": 0, "context_events": 1 if tid == "t2" else 0, "error": None,
                     "started_at": T0, "finished_at": T0 + timedelta(seconds=30), "wall_seconds": 30.0})
    with ShardWriter(out, "turns", **kw) as w:
        for turns in all_turns.values():
            w.write_many(turns)
    labels = []
    with ShardWriter(out, "turn_labels", **kw) as w:
        for tid, turns in all_turns.items():
            if tid == "t4":
                continue
            for t in turns:
                if t["role"] != "assistant":
                    continue
                harmful = (tid, t["turn_index"]) == HARMFUL
                row = {"trajectory_id": tid, "turn_index": t["turn_index"], "valid_call": True, "tool_error": False,
                       "novel_query": True, "progress": not harmful, "redundant": harmful, "recovery": False,
                       "judge_label": "harmful" if harmful else "essential", "judge_rationale": "test",
                       "loss_weight": 0.0 if harmful else (0.5 if t["tool_name"] == "search" else 1.0),
                       "label_policy": "test"}
                labels.append(row)
                w.write(row)
    with ShardWriter(out, "kept", **kw) as w:
        for tid in KEPT:
            qid = steps[tid][0]
            w.write({"trajectory_id": tid, "question_id": qid, "correct": True, "f1": 1.0,
                     "judge_verdict": None, "judge_rationale": None})
    with ShardWriter(out, "rejects", **kw) as w:
        w.write({"stage": "filter", "step": "answer_check", "reason": "answer_mismatch", "row_table": "kept",
                 "row_id": "t3", "detail": "Unknown != Ilse Morrow"})
        for i in range(2):
            w.write({"stage": "questions", "step": "checks", "reason": "ambiguous_answer", "row_table": "questions",
                     "row_id": f"qx{i}", "detail": "two candidates"})
    with ShardWriter(out, "difficulty", **kw) as w:
        for qid in QUESTIONS:
            w.write({"question_id": qid, "k": 4, "solve_rate_no_tools": 0.0, "solve_rate_tools": 0.75,
                     "teacher_model": "gemma-3-270m"})
    return {"turns": all_turns, "labels": labels, "steps": steps}
