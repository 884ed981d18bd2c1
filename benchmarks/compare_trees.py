"""Before/after: the same benchmarks on two source trees, in interleaved rounds, CPU seconds side by side.

    python benchmarks/compare_trees.py --before REV [--rounds 3] [--only ingest,questions]

Checks REV out into a temporary worktree, then runs every measurement once per tree per round,
alternating trees, each in a fresh process with that tree's ``src`` on ``PYTHONPATH`` and that
tree's own benchmark scripts (so an API change between the trees does not matter). Reports the
median CPU seconds (user + sys of the process tree) per tree and their ratio; a ratio near 1.0
means no regression. Wall times on this shared VM are noisier than CPU times, so CPU decides.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DUMP = (REPO / ".." / "shared" / "wiki" / "enwiki-233.xml.bz2").resolve()

# name -> what to run: a Python snippet ({out}: a scratch directory per tree and round) or "SCRIPT
# path args" (the tree's own benchmark script). A snippet that prints "MEASURED <cpu s>" reports only
# that part (the questions stage without the ingest it needs first).
_CFG = f"o = {{'run.out': '{{out}}', 'graph.dump': '{DUMP}', 'graph.workers': 1}}; "
MEASURES: dict[str, str] = {
    "ingest enwiki-233 (workers=1)": ("from hopforge.config import load_config; from hopforge.graph import run_ingest; "
                                      + _CFG + "run_ingest(load_config(None, o))"),
    "1,000 template questions (stage CPU)": (
        "import time; from hopforge.config import load_config; from hopforge.graph import run_ingest; "
        "from hopforge.synth import run_questions; " + _CFG + "run_ingest(load_config(None, o)); "
        "t = time.process_time(); run_questions(load_config(None, {**o, 'synth.n_questions': 1000, "
        "'run.seed': 7})); print('MEASURED', time.process_time() - t)"),
    "filters + labels e2e (1,000 trajectories)": "SCRIPT benchmarks/filters.py --trajectories 200 --e2e 1000 "
                                                 "--questions 1000",
    "export (2,000 trajectories)": "SCRIPT benchmarks/export.py --trajectories 2000 --steps 6",
    "storage (100k turn rows)": "SCRIPT benchmarks/storage.py --rows 100000",
    "rollout engine (scripted, --quick)": "SCRIPT benchmarks/rollouts.py --quick",
}


def cpu_of_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(tree: Path, snippet: str, out: Path) -> tuple[float, float, float | None]:
    """(CPU s, wall s, the snippet's own 'MEASURED x' CPU figure if it prints one)."""
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree}", "PREFECT_LOGGING_LEVEL": "ERROR"}
    if snippet.startswith("SCRIPT "):
        cmd = [sys.executable, *snippet[len("SCRIPT "):].split()]
    else:
        cmd = [sys.executable, "-c", snippet.replace("{out}", str(out))]
    c0, w0 = cpu_of_children(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - w0, cpu_of_children() - c0
    if proc.returncode != 0:
        raise SystemExit(f"{tree.name}: {snippet[:60]}… failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    measured = next((float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("MEASURED")),
                    None)
    return cpu, wall, measured


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="git revision of the 'before' tree")
    ap.add_argument("--after", default=None, help="git revision of the 'after' tree (default: this working tree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated substrings of measurement names")
    a = ap.parse_args()
    names = [n for n in MEASURES if not a.only or any(s.strip() in n for s in a.only.split(","))]
    work = Path(tempfile.mkdtemp(prefix="hopforge-compare-"))
    before = work / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), a.before], check=True,
                   capture_output=True)
    trees = {"before": before, "after": REPO}
    if a.after:
        trees["after"] = work / "after"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(trees["after"]), a.after],
                       check=True, capture_output=True)
    results: dict[str, dict[str, list[float]]] = {n: {"before": [], "after": []} for n in names}
    try:
        for r in range(a.rounds):
            for name in names:
                for label in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    out = work / f"{label}-{r}-{abs(hash(name))}"
                    cpu, wall, measured = run_one(trees[label], MEASURES[name], out)
                    results[name][label].append(measured if measured is not None else cpu)
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"round {r + 1} {label:<6} {name}: {results[name][label][-1]:.2f} CPU s ({wall:.1f} s wall)",
                          file=sys.stderr, flush=True)
    finally:
        for t in {before, trees["after"]} - {REPO}:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(t)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    head = a.after or subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip() + " (working tree)"
    print(f"# before/after: {a.before} vs {head}\n")
    print(f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}; machine: {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f}")
    print(f"- {a.rounds} interleaved rounds; median CPU seconds of the process tree (questions: the stage's "
          "own CPU, ingest excluded)\n")
    print("| measurement | before (CPU s) | after (CPU s) | after / before | per-round ratios |")
    print("|---|---:|---:|---:|---|")
    for name in names:
        b, f = results[name]["before"], results[name]["after"]
        ratios = ", ".join(f"{y / x:.2f}" for x, y in zip(b, f, strict=True))
        print(f"| {name} | {statistics.median(b):.2f} | {statistics.median(f):.2f} | "
              f"{statistics.median(f) / statistics.median(b):.2f} | {ratios} |")


if __name__ == "__main__":
    main()
