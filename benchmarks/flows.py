"""Prefect overhead of `hopforge run`: a full pipeline run, then the same command again (every batch complete).

    PYTHONPATH=src python benchmarks/flows.py [--out benchmarks/_work/flows]

Uses enwiki-233 and the scripted teacher (no model), so the numbers are the
orchestration cost around cheap stages: ephemeral API start, flow/task-run
bookkeeping, and the completion checks of batches already done.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from hopforge.flows import run_pipeline

CONFIG = """
[graph]
dump = "{dump}"
workers = 1
batch_pages = 64
[synth]
n_questions = 24
hops_min = 2
hops_max = 3
batch_size = 8
[teacher]
backend = "scripted"
[rollout]
batch_questions = 2
max_turns = 12
[filters]
min_tool_calls = 1
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/_work/flows"))
    args = ap.parse_args()
    dump = (Path(__file__).resolve().parents[1] / ".." / "shared" / "wiki" / "enwiki-233.xml.bz2").resolve()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    config = args.out / "bench.toml"
    config.write_text(CONFIG.format(dump=dump))
    for label in ("first run", "re-run (complete)"):
        t0 = time.monotonic()
        summary, state = run_pipeline(config, {"run.out": str(args.out / "data")})
        total = time.monotonic() - t0
        stages = sum(s["seconds"] for s in summary["stages"])
        tasks = sum(s["tasks"] for s in summary["stages"])
        skipped = sum(s["skipped"] for s in summary["stages"])
        print(f"{label}: {total:.1f} s wall, {stages:.1f} s inside stage flows, {tasks} tasks "
              f"({skipped} skipped), state {state.name}")
        for s in summary["stages"]:
            print(f"  {s['stage']:<22} tasks {s['tasks']:>3}  ran {s['ran']:>3}  skipped {s['skipped']:>3}  "
                  f"{s['seconds']:.1f} s")


if __name__ == "__main__":
    main()
