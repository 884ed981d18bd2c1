"""The question stage's memory per process: private (anonymous) against file-backed (memory-mapped
caches, which the kernel can drop), for the first process of a graph run, which builds the page
rows, clue index and fact graph caches under ``OUT/_cache``, and for every later one, which opens them.

    PYTHONPATH=src python benchmarks/question_memory.py --config /work/bench-scale/out-100000.toml

Each measurement is a fresh process that loads the stage's per-process context (``_Context``: graph,
page rows, clue index, fact graph, walker, certifier) and then opens the search index, as a batch of
the question stage does before its first question; ``/proc/self/status`` is sampled every 0.1 s.
Per config: a cold run (the three caches removed first), then a warm one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, re, sys, threading, time
peak = {"anon": 0, "file": 0, "rss": 0}
def sample():
    while True:
        status = open("/proc/self/status").read()
        for k, key in (("anon", "RssAnon"), ("file", "RssFile"), ("rss", "VmRSS")):
            peak[k] = max(peak[k], int(re.search(key + r":\s+(\d+)", status).group(1)) // 1024)
        time.sleep(0.1)
threading.Thread(target=sample, daemon=True).start()
time.sleep(0.2)
base = dict(peak)
from hopforge.config import load_config
from hopforge.stage import resolve
from hopforge.synth import questions
cfg = load_config(sys.argv[1], {})
t0 = time.process_time()
ctx = questions.context(cfg, resolve(cfg, "graph").fingerprint)
setup = time.process_time() - t0
ctx.search
time.sleep(0.3)
print(json.dumps({"setup_cpu_s": round(setup, 2), "nodes": ctx.view.n_nodes, "fact_edges": ctx.facts.n_edges,
                  "clue_keys": len(ctx.clues), "python_baseline_anon_mb": base["anon"],
                  "peak_anon_mb": peak["anon"], "peak_file_mb": peak["file"], "peak_rss_mb": peak["rss"]}))
"""


def measure(config: Path, cold: bool) -> dict:
    if cold:
        import tomllib

        out = Path(tomllib.loads(config.read_text())["run"]["out"])
        for kind in ("pages", "clues", "facts"):
            for d in (out / "_cache").glob(f"{kind}-*"):
                shutil.rmtree(d)
    res = subprocess.run([sys.executable, "-c", CHILD, str(config)], capture_output=True, text=True, check=True)
    row = json.loads(res.stdout.strip().splitlines()[-1])
    return {"process": "first (builds the caches)" if cold else "later (opens them)", **row}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, action="append", required=True, help="a scale.py TOML; repeat for sizes")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = []
    for config in args.config:
        for cold in (True, False):
            row = {"config": str(config), **measure(config, cold)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print("\n| graph | process | setup CPU | peak private (anon) | peak file-backed | peak RSS |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['nodes']:,} nodes, {r['fact_edges']:,} fact edges | {r['process']} | {r['setup_cpu_s']} s | "
              f"{r['peak_anon_mb']} MB | {r['peak_file_mb']} MB | {r['peak_rss_mb']} MB |")


if __name__ == "__main__":
    main()
