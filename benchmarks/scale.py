"""Growth curves: what each stage costs as the dump grows from 10k to 1M pages, fitted and extrapolated.

    PYTHONPATH=src python benchmarks/scale.py --data /work/bench-scale --sizes 10000 100000 1000000 \\
        [--workers 2] [--questions 200] [--search-queries 1000] [--json benchmarks/results/scale.json]

For each size the scale generator (``hopforge.testing.scaledump``) writes a realistic multistream
dump under ``--data`` (kept for re-runs), then every stage runs as its own process, as a user runs
it, while a sampler reads every process of the tree every 0.2 s:

- **ingest** (``hopforge ingest --workers W``): CPU per page of the parse batches (the stage's own
  ``cpu_seconds``), peak RSS of each worker process, wall time of the parse phase (while workers
  live);
- **graph build** (the same command after the last worker exits: redirects, link resolution,
  CSR, PageRank): seconds and the main process's peak RSS;
- **walks**: the vectorised walker over the CSR, 100,000 walks of 2–6 hops, CPU per walk;
- **questions** (``hopforge questions``): a first run that builds the graph run's caches (page
  rows, clue index, fact graph under ``OUT/_cache``), then two runs of different sizes that open
  them, so the fixed cost separates from the per-question cost of the checks: per-question CPU,
  fixed CPU of the first and of later processes, peak RSS (which counts the memory-mapped caches'
  pages; ``benchmarks/question_memory.py`` splits private from file-backed memory);
- **search** (each backend the installed ``hopforge.search`` offers): index build seconds and peak
  RSS, disk, open seconds and RSS after open, query p50/p99 over ``--search-queries`` queries drawn
  from the pages' own sentences, single thread; the backends side by side on the same passages.

Each figure is fitted as ``cost = c * n^b`` over the sizes measured (least squares in log-log;
``b`` ≈ 1 is linear, ≈ 0 flat) and extrapolated to enwiki's 6.9M articles. Results go to
``--json``; ``--markdown`` prints the tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
ENWIKI_ARTICLES = 6_900_000
ENWIKI_PASSAGES = 60_000_000


@dataclass
class Sample:
    wall: float = 0.0
    cpu: float = 0.0  # user+sys of the whole process tree (reaped children included)
    main_peak_rss: int = 0
    worker_peak_rss: int = 0  # max over child processes
    worker_peak_uss: int = 0  # their private memory (RSS counts pages shared with the forking parent)
    workers_seen: int = 0
    last_worker_at: float = 0.0  # seconds after start when a child was last alive
    stdout: str = ""
    stderr: str = ""
    per_pid: dict[int, int] = field(default_factory=dict)
    next_uss: float = 0.0


def measure(cmd: list[str], env: dict[str, str] | None = None, period: float = 0.2) -> Sample:
    """Run ``cmd`` to completion, sampling the RSS of it and its descendants."""
    s = Sample()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    done = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                kids = root.children(recursive=True)
                s.main_peak_rss = max(s.main_peak_rss, root.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            for k in kids:
                try:
                    rss = k.memory_info().rss
                    if time.perf_counter() - t0 > s.next_uss:  # smaps is slow to read: every 2 s
                        s.worker_peak_uss = max(s.worker_peak_uss, k.memory_full_info().uss)
                        s.next_uss = time.perf_counter() - t0 + 2.0
                except psutil.NoSuchProcess:
                    continue
                s.per_pid[k.pid] = max(s.per_pid.get(k.pid, 0), rss)
                s.worker_peak_rss = max(s.worker_peak_rss, rss)
                s.last_worker_at = time.perf_counter() - t0
            done.wait(period)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    s.wall = time.perf_counter() - t0
    # The child's rusage as reaped includes every descendant it reaped (pool workers).
    ru = _last_child_rusage()
    s.cpu = ru
    s.workers_seen = len(s.per_pid)
    s.stdout, s.stderr = out, err
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-3000:]}")
    return s


_RUSAGE_BEFORE = [0.0]


def _last_child_rusage() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ru.ru_utime + ru.ru_stime
    delta = total - _RUSAGE_BEFORE[0]
    _RUSAGE_BEFORE[0] = total
    return delta


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "PREFECT_LOGGING_LEVEL": "WARNING"}


def _hopforge(*args: str) -> list[str]:
    return [sys.executable, "-m", "hopforge.cli", *args]


def _json_tail(text: str) -> dict[str, Any]:
    """The last JSON object a hopforge command printed."""
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start + 1
    return json.loads(text[start:])


def fit(ns: list[float], ys: list[float]) -> dict[str, float] | None:
    """cost = c * n^b by least squares in log-log; None with fewer than two positive points."""
    pts = [(n, y) for n, y in zip(ns, ys, strict=True) if n > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    b, a = np.polyfit(x, y, 1)
    return {"b": float(b), "c": float(np.exp(a))}


def extrapolate(f: dict[str, float] | None, n: float) -> float | None:
    return None if f is None else f["c"] * n ** f["b"]


# ----------------------------------------------------------------------------- stages


def write_config(dump: Path, out: Path, workers: int, batch_pages: int, search: dict[str, Any] | None = None) -> Path:
    """The TOML every stage of one size reads (so the questions stage finds this graph)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["[run]", f"out = {json.dumps(str(out))}", "", "[graph]", f"dump = {json.dumps(str(dump))}",
             f"workers = {workers}", f"batch_pages = {batch_pages}", ""]
    if search:
        lines += ["[search]", *(f"{k} = {json.dumps(v)}" for k, v in search.items()), ""]
    path = out.parent / f"{out.name}.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def bench_ingest(config: Path, out: Path) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    s = measure(_hopforge("ingest", "--config", str(config)), _env())
    stats = _json_tail(s.stdout)
    parse_wall = s.last_worker_at
    return {
        "pages": stats["pages"], "raw_pages": stats["raw_pages"], "redirects": stats["redirects"],
        "links": stats["links"], "edges": stats["edges"],
        "parse_cpu_s": stats["cpu_seconds"], "cpu_ms_per_page": 1000 * stats["cpu_seconds"] / stats["raw_pages"],
        "worker_peak_rss_mb": s.worker_peak_rss / 2**20,
        "worker_peak_uss_mb": s.worker_peak_uss / 2**20, "workers": s.workers_seen,
        "parse_wall_s": parse_wall, "build_wall_s": s.wall - parse_wall,
        "main_peak_rss_mb": s.main_peak_rss / 2**20, "wall_s": s.wall, "tree_cpu_s": s.cpu,
    }


def bench_walks(out: Path, walks: int = 100_000) -> dict[str, Any]:
    code = f"""
import json, resource, time, numpy as np
from hopforge.storage.arrays import load_arrays
from hopforge.synth.walks import Walker
t = time.process_time()
a, meta = load_arrays({str(out)!r}, "graph", mmap=True)
n = meta["n_nodes"]
w = Walker(a["indptr"], a["indices"], a["edge_in_lead"], np.ones(n, bool), lead_weight=2.0)
setup = time.process_time() - t
rng = np.random.default_rng(0)
ok = np.flatnonzero(w.total > 0)
starts = rng.choice(ok, {walks}).astype(np.int32)
hops = rng.integers(2, 7, {walks}).astype(np.int32)
t = time.process_time()
_, edges, _ = w.walk(starts, hops, rng)
dt = time.process_time() - t
print(json.dumps({{"setup_cpu_s": setup, "walk_cpu_s": dt, "us_per_walk": 1e6 * dt / {walks},
                  "steps": int((edges >= 0).sum()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    s = measure([sys.executable, "-c", code], _env())
    return json.loads(s.stdout.strip().splitlines()[-1])


def bench_questions(config: Path, counts: tuple[int, int], workers: int = 1, out: Path | None = None) -> dict[str, Any]:
    """Three runs: a cold one that builds the graph run's fact graph cache (``OUT/_cache/facts-*``,
    removed first), then two warm ones of different sizes that open it, as every later process of
    the run does; the warm pair separates fixed from per-question cost."""
    if out is not None:
        for cache in (out / "_cache").glob("facts-*"):
            shutil.rmtree(cache)
    runs = []
    for i, n in enumerate((counts[0], *counts)):
        # A fresh seed: a finished stage run with the same settings would be skipped, not timed.
        seed = 2 * (time.time_ns() // 1000 % 10**9) + i
        s = measure(_hopforge("questions", "--config", str(config), "--n", str(n), "--seed", str(seed),
                              "--workers", str(workers)), _env())
        stats = _json_tail(s.stdout)
        runs.append({"n": n, "cache": "cold" if i == 0 else "warm", "cpu_s": s.cpu, "wall_s": s.wall,
                     "peak_rss_mb": max(s.main_peak_rss, s.worker_peak_rss) / 2**20,
                     "passed": stats.get("questions") or stats.get("passed"), "stats": stats})
    cold, a, b = runs
    per_q = (b["cpu_s"] - a["cpu_s"]) / (b["n"] - a["n"])
    return {"runs": runs, "cpu_ms_per_question": 1000 * per_q, "fixed_cpu_s": max(0.0, a["cpu_s"] - per_q * a["n"]),
            "cold_fixed_cpu_s": max(0.0, cold["cpu_s"] - per_q * cold["n"]), "cold_peak_rss_mb": cold["peak_rss_mb"],
            "peak_rss_mb": max(a["peak_rss_mb"], b["peak_rss_mb"])}


SEARCH_CHILD = """
import json, random, re, resource, shutil, statistics, sys, time
from pathlib import Path
import psutil
from hopforge.config import SearchConfig
from hopforge.search.open import estimate_passages, open_index
from hopforge.storage import read_table
from hopforge.storage.arrays import latest_run
out, backend, phase, n_queries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
run = latest_run(out, "graph")
cfg = SearchConfig(backend=backend)
res = {"backend": backend, "phase": phase}
if phase == "build":
    for d in (Path(out) / "_cache").glob("bm25-*" if backend == "bm25s" else "tantivy-*"):
        shutil.rmtree(d)
    t = time.perf_counter()
    idx = open_index(out, run, cfg)
    res.update(build_s=time.perf_counter() - t, passages=idx.num_passages,
               estimated_passages=estimate_passages(out, run))
    d = [p for p in (Path(out) / "_cache").glob("bm25-*" if backend == "bm25s" else "tantivy-*") if p.is_dir()]
    res["disk_mb"] = sum(f.stat().st_size for p in d for f in p.rglob("*") if f.is_file()) / 2**20
else:
    rss0 = psutil.Process().memory_info().rss
    t = time.perf_counter()
    idx = open_index(out, run, cfg)
    res.update(open_s=time.perf_counter() - t, rss_after_open_mb=psutil.Process().memory_info().rss / 2**20,
               rss_open_delta_mb=(psutil.Process().memory_info().rss - rss0) / 2**20)
    rng = random.Random(0)
    pages = read_table(out, "pages", run=run, columns=["title", "text"]).to_pylist()
    words = re.compile(r"[A-Za-z]{3,}")
    queries = []
    while len(queries) < n_queries + 50:
        p = rng.choice(pages)
        w = words.findall(p["text"] or "")
        if len(w) < 8:
            continue
        k = rng.randint(2, 6)
        i = rng.randrange(len(w) - k)
        q = " ".join(w[i:i + k])
        queries.append(f"{p['title'].split(' (')[0]} {q}" if rng.random() < 0.5 else q)
    del pages
    lat = []
    for j, q in enumerate(queries):
        t = time.perf_counter()
        idx.search(q, 5)
        if j >= 50:
            lat.append(1000 * (time.perf_counter() - t))
    lat.sort()
    res.update(p50_ms=statistics.median(lat), p99_ms=lat[int(0.99 * len(lat)) - 1], queries=len(lat))
res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(res))
"""


def bench_search(out: Path, queries: int, backends: list[str]) -> dict[str, Any]:
    """Each search backend over this graph's pages: build (fresh process), then open + queries (another)."""
    res: dict[str, Any] = {}
    for b in backends:
        row: dict[str, Any] = {}
        for phase in ("build", "query"):
            s = measure([sys.executable, "-c", SEARCH_CHILD, str(out), b, phase, str(queries)], _env())
            row.update(json.loads(s.stdout.strip().splitlines()[-1]))
            row[f"{phase}_peak_rss_mb"] = row.pop("peak_rss_mb")
        res[b] = row
    return res


# ----------------------------------------------------------------------------- report


def run(args: argparse.Namespace) -> dict[str, Any]:
    from hopforge.testing.scaledump import generate

    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                          f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
                               "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "sizes": {}}
    if args.json and Path(args.json).exists() and args.resume:
        results = json.loads(Path(args.json).read_text())
    for n in args.sizes:
        key = str(n)
        row = results["sizes"].setdefault(key, {})
        g = generate(n, args.data, workers=args.workers)
        row["dump_mb"] = g.dump.stat().st_size / 1e6
        out = args.data / f"out-{n}"
        config = write_config(g.dump, out, args.workers, args.batch_pages, search=args.search_config)
        for step in args.steps:
            if step in row and args.resume:
                continue
            print(f"[{n}] {step} …", file=sys.stderr, flush=True)
            if step == "ingest":
                row[step] = bench_ingest(config, out)
            elif step == "walks":
                row[step] = bench_walks(out)
            elif step == "questions":
                row[step] = bench_questions(config, (args.questions, 2 * args.questions), out=out)
            elif step == "search":
                row[step] = bench_search(out, args.search_queries, args.backends)
            print(f"[{n}] {step}: {json.dumps(row[step], default=str)[:400]}", file=sys.stderr, flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    results["fits"] = fits(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return results


CURVES = [  # (name, step, key, unit)
    ("ingest CPU per page", "ingest", "cpu_ms_per_page", "ms"),
    ("ingest peak RSS per worker", "ingest", "worker_peak_rss_mb", "MB"),
    ("ingest peak private memory (USS) per worker", "ingest", "worker_peak_uss_mb", "MB"),
    ("ingest parse wall (W workers)", "ingest", "parse_wall_s", "s"),
    ("graph build wall", "ingest", "build_wall_s", "s"),
    ("graph build peak RSS (main process)", "ingest", "main_peak_rss_mb", "MB"),
    ("walks CPU per walk", "walks", "us_per_walk", "µs"),
    ("walker setup CPU", "walks", "setup_cpu_s", "s"),
    ("questions CPU per question", "questions", "cpu_ms_per_question", "ms"),
    ("questions fixed CPU, first process (builds the caches)", "questions", "cold_fixed_cpu_s", "s"),
    ("questions peak RSS, first process", "questions", "cold_peak_rss_mb", "MB"),
    ("questions fixed CPU, later processes (open the caches)", "questions", "fixed_cpu_s", "s"),
    ("questions peak RSS, later processes", "questions", "peak_rss_mb", "MB"),
    ("search passages", "search", "tantivy.passages", ""),
    ("search build, tantivy", "search", "tantivy.build_s", "s"),
    ("search build peak RSS, tantivy", "search", "tantivy.build_peak_rss_mb", "MB"),
    ("search p50, tantivy", "search", "tantivy.p50_ms", "ms"),
    ("search p50, bm25s", "search", "bm25s.p50_ms", "ms"),
    ("search RSS after open, tantivy", "search", "tantivy.rss_after_open_mb", "MB"),
    ("search RSS after open, bm25s", "search", "bm25s.rss_after_open_mb", "MB"),
]


def _get(row: dict[str, Any], step: str, key: str) -> Any:
    v: Any = row.get(step, {})
    for part in key.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def fits(results: dict[str, Any]) -> dict[str, Any]:
    out = {}
    sizes = sorted(results["sizes"], key=int)
    for name, step, key, unit in CURVES:
        ns, ys = [], []
        for n in sizes:
            v = _get(results["sizes"][n], step, key)
            art = results["sizes"][n].get("ingest", {}).get("pages")
            if v is not None and art:
                ns.append(art)
                ys.append(v)
        f = fit(ns, ys)
        out[name] = {"unit": unit, "articles": ns, "values": ys, "fit": f,
                     "enwiki": extrapolate(f, ENWIKI_ARTICLES)}
    return out


def markdown(results: dict[str, Any]) -> str:
    sizes = sorted(results["sizes"], key=int)
    lines = [f"Machine: {results['machine']}. Date: {results['date']}. Command: `{results['command']}`", "",
             "| figure | " + " | ".join(f"{int(n):,} pages" for n in sizes) + " | growth n^b | enwiki (6.9M articles) |",
             "|---|" + "---:|" * (len(sizes) + 2)]
    for name, v in results["fits"].items():
        by = dict(zip(v["articles"], v["values"], strict=True))
        cells = []
        for n in sizes:
            art = results["sizes"][n].get("ingest", {}).get("pages")
            cells.append(f"{by[art]:.3g}" if art in by else "–")
        f = v["fit"]
        unit = f" ({v['unit']})" if v["unit"] else ""
        lines.append(f"| {name}{unit} | " + " | ".join(cells) +
                     f" | {f['b']:.2f} |" if f else f"| {name}{unit} | " + " | ".join(cells) + " | – |")
        lines[-1] += f" {v['enwiki']:.3g} |" if v["enwiki"] is not None else " – |"
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--steps", nargs="+", default=["ingest", "walks", "questions", "search"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-pages", type=int, default=1000)
    p.add_argument("--questions", type=int, default=100)
    p.add_argument("--search-queries", type=int, default=1000)
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    p.add_argument("--resume", action="store_true", help="keep the steps already in --json")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--backends", nargs="+", default=["bm25s", "tantivy"])
    p.add_argument("--search", default=None, help="JSON of [search] settings for the question stage")
    args = p.parse_args()
    args.search_config = json.loads(args.search) if args.search else None
    results = run(args)
    if args.markdown:
        print(markdown(results))


if __name__ == "__main__":
    main()
