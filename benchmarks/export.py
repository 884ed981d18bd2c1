"""Export + card throughput on synthetic rollouts shaped like real ones.

    PYTHONPATH=src python benchmarks/export.py --trajectories 5000 --steps 6

Writes N trajectories (system, user, then `steps` assistant calls each followed by
a ~1.5 KB tool observation, plus labels and kept rows) to a temp dir, then times
`export_dataset` for each format (and once with windowing + shortened
reasoning) and `render_card`. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from hopforge.config import load_config
from hopforge.storage import schema_for, write_shard
from hopforge.publish.card import render_card
from hopforge.publish.export import export_dataset

OBS = ("Search results for the query:\n\n" + "[1] Some page (passage 3): a sentence about a place and a person. " * 20)


def write_rollouts(out: Path, n: int, steps: int) -> int:
    now = datetime.now(UTC)
    traj, turns, labels, kept, questions = [], [], [], [], []
    for i in range(n):
        tid, qid = f"t{i:07d}", f"q{i // 2:07d}"  # two attempts per question
        if i % 2 == 0:
            questions.append({"question_id": qid, "walk_id": f"w{i}", "question": f"Question number {i}?",
                              "answer": "Answer", "hops": 2 + i % 3, "composer": "template", "passed": True})
        rows = [{"role": "system", "content": "You are a search agent."}, {"role": "user", "content": f"Q {i}?"}]
        for s in range(steps):
            name = "answer" if s == steps - 1 else ("search" if s % 2 == 0 else "visit")
            args = {"query": f"query {s}", "k": 5} if name == "search" else (
                {"title": f"Page {s}", "page": 0} if name == "visit" else {"text": "Answer"})
            rows.append({"role": "assistant", "content": "", "reasoning": "Think about the next hop. " * 8,
                         "tool_call_id": f"c{s}", "tool_name": name, "tool_args": args, "tokens_out": 40})
            if name != "answer":
                rows.append({"role": "tool", "content": OBS, "tool_call_id": f"c{s}", "tool_name": name})
        for j, r in enumerate(rows):
            turns.append({"trajectory_id": tid, "question_id": qid, "turn_index": j, "context_action": "none", **r})
            if r["role"] == "assistant":
                labels.append({"trajectory_id": tid, "turn_index": j, "loss_weight": 1.0, "judge_label": "essential"})
        traj.append({"trajectory_id": tid, "question_id": qid, "teacher_backend": "vllm", "teacher_model": "m",
                     "status": "answered", "num_turns": len(rows), "num_tool_calls": steps, "tokens_in": 3000,
                     "tokens_out": 300, "started_at": now, "finished_at": now})
        kept.append({"trajectory_id": tid, "question_id": qid, "correct": True, "f1": 1.0})
    for table, data in (("questions", questions), ("trajectories", traj), ("turns", turns),
                        ("turn_labels", labels), ("kept", kept)):
        write_shard(out, table, pa.Table.from_pylist(data, schema=schema_for(table)), run_id="bench")
    return len(turns)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trajectories", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data"
        n_turns = write_rollouts(out, args.trajectories, args.steps)
        runs = [("trl", {}), ("sharegpt", {}), ("openai-jsonl", {}),
                ("trl", {"export.window_turns": 2, "export.reasoning": "shorten", "export.reasoning_max_chars": 64})]
        for fmt, over in runs:
            cfg = load_config(None, {"run.out": str(out), **over})
            dest = Path(tmp) / f"{fmt}-{len(over)}"
            t0 = time.perf_counter()
            m = export_dataset(cfg, fmt, dest)
            dt = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
            print(json.dumps({"format": fmt, "options": over, "trajectories": args.trajectories, "turns": n_turns,
                              "rows": sum(m["counts"]["samples"].values()), "seconds": round(dt, 2),
                              "turns_per_s": round(n_turns / dt), "bytes": size}))
        t0 = time.perf_counter()
        render_card(load_config(None, {"run.out": str(out)}), Path(tmp) / "trl-0")
        print(json.dumps({"card_seconds": round(time.perf_counter() - t0, 2)}))


if __name__ == "__main__":
    main()
