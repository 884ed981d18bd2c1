"""Ingest throughput: hopforge vs wikiextractor vs `bzcat` on the same dump, in one run.

    PYTHONPATH=src /work/main/.venv/bin/python benchmarks/ingest.py [--dump FILE] [--workers 1]

Every tool runs as its own subprocess under /usr/bin/time, which reports wall
time, user+system CPU of the process tree and peak RSS of the largest process.
"Per core" rates divide by CPU seconds, not wall seconds, so they stay
meaningful on a shared machine where wall time depends on the neighbours' load.

wikiextractor is installed into its own venv under benchmarks/_work/ (gitignored)
so its pins never touch the project environment. It runs with --no-templates
(its fast mode) and extracts plain text only; hopforge additionally extracts
every link with anchor and sentence, infoboxes, categories, flags and redirects,
and builds the graph (PageRank, CSR).
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
VENV = WORK / "venv"
TIME = shutil.which("time") or "/usr/bin/time"


def ensure_wikiextractor() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if subprocess.run([str(py), "-c", "import wikiextractor"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "wikiextractor"], check=True)
    return py


def timed(cmd: list[str] | str, *, shell: bool = False, env: dict | None = None) -> dict:
    fmt = "BENCH %e %U %S %M"
    full = f"{TIME} -f '{fmt}' sh -c '{cmd}'" if shell else [TIME, "-f", fmt, *cmd]
    proc = subprocess.run(full, shell=shell, capture_output=True, text=True, env=env)
    m = re.search(r"BENCH ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {cmd}\n{proc.stderr[-3000:]}")
    wall, user, sys_, rss = float(m[1]), float(m[2]), float(m[3]), int(m[4])
    return {"wall_s": wall, "cpu_s": user + sys_, "peak_rss_mb": rss / 1024, "stdout": proc.stdout}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump", default=str(ROOT / ".." / "shared" / "wiki" / "enwiki-233.xml.bz2"))
    ap.add_argument("--workers", type=int, default=1, help="hopforge worker processes (default 1: per-core rate)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds; each round runs every tool once, in turn, so a slow spell on a shared "
                         "machine hits all of them (the table reports each tool's median round)")
    args = ap.parse_args()
    dump = Path(args.dump).resolve()
    if not dump.exists():
        raise SystemExit(f"dump not found: {dump}")
    with bz2.open(dump, "rb") as f:
        raw = 0
        pages = 0
        while block := f.read(1 << 20):
            raw += len(block)
            pages += block.count(b"<page>")
    mb = raw / 1e6
    WORK.mkdir(parents=True, exist_ok=True)
    wx_py = ensure_wikiextractor()

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    hf_name = f"hopforge ingest (workers={args.workers})"
    rounds: list[dict[str, dict]] = []
    stats = {}
    for _ in range(max(1, args.repeat)):
        results = {"bzcat > /dev/null": timed(f"bzcat {dump} > /dev/null", shell=True)}
        with tempfile.TemporaryDirectory(dir=WORK) as tmp:
            results["wikiextractor --no-templates"] = timed(
                [str(wx_py), "-m", "wikiextractor.WikiExtractor", "--no-templates", "--processes", "1", "-q",
                 "-o", f"{tmp}/wx", str(dump)])
            code = (
                "import json,sys; from hopforge.config import load_config; from hopforge.graph import run_ingest; "
                f"cfg=load_config(None, {{'graph.dump': {str(dump)!r}, 'run.out': {tmp + '/hf'!r}, "
                f"'graph.workers': {args.workers}}}); print(json.dumps(run_ingest(cfg).to_dict()))"
            )
            results[hf_name] = timed([sys.executable, "-c", code], env=env)
            stats = json.loads(results[hf_name]["stdout"].strip().splitlines()[-1])
        rounds.append(results)

    print(f"# ingest benchmark: {dump.name}\n")
    print(f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"- dump: {dump.stat().st_size / 1e6:.1f} MB bz2, {mb:.1f} MB XML, {pages} pages")
    print(f"- hopforge output: {stats['pages']} pages, {stats['redirects']} redirects, "
          f"{stats['links_raw']} links with anchor+sentence ({stats['links']} in-dump), "
          f"{stats['edges']} graph edges, {sum(stats['rejects'].values())} rejects\n")
    print(f"{len(rounds)} round(s); each row is that tool's median round by CPU seconds.\n")
    print("| tool | wall s | CPU s | pages/s per core | XML MB/s per core | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in rounds[0]:
        runs = sorted((r[name] for r in rounds), key=lambda r: r["cpu_s"])
        r = runs[len(runs) // 2]
        cpu = max(r["cpu_s"], 1e-9)
        print(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {pages / cpu:.1f} | {mb / cpu:.2f} | "
              f"{r['peak_rss_mb']:.0f} |")
    wx = "wikiextractor --no-templates"
    ratios = [r[wx]["cpu_s"] / r[hf_name]["cpu_s"] for r in rounds]
    print(f"\nPer round, wikiextractor CPU / hopforge CPU (> 1: hopforge is faster per core): "
          f"{', '.join(f'{x:.2f}' for x in ratios)}")


if __name__ == "__main__":
    main()
