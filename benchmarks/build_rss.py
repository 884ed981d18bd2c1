"""Peak RSS of the graph stage's whole-dump step (build_graph) on an already ingested OUT.

    PYTHONPATH=src python benchmarks/build_rss.py OUT DUMP [--scratch DIR]

Copies OUT's ingest tables (pages, links_raw, redirects_raw, ingest_batches, rejects, the stage
records) to a scratch directory, then runs ``build_graph`` there in a fresh child process and
reports the child's peak RSS (``ru_maxrss``), its wall time and what it built. The baseline (RSS of
the same child importing hopforge and resolving the run, without building) is reported too, so the
build's own share can be read off. Uses only ``build_graph(run, alpha)``, so it runs against any
source tree on ``PYTHONPATH`` (before/after a change).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hopforge.testing.stages import ingested_copy

CHILD = r"""
import json, resource, sys, time
from hopforge.config import load_config
from hopforge.stage import resolve
out, dump, build, chunk, config = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), sys.argv[5]
cfg = load_config(config or None, {"run.out": out, "graph.dump": dump})
run = resolve(cfg, "graph")
if not run.read("pages", columns=[]).num_rows:
    sys.exit(f"no pages of graph run {run.fingerprint} under {out}: pass --config with the settings it was ingested with")
res = {}
t0 = time.monotonic()
if build:
    from hopforge.graph import build
    from hopforge.graph.build import build_graph
    if chunk and hasattr(build, "LINK_CHUNK_ROWS"):
        build.LINK_CHUNK_ROWS = chunk
    res = build_graph(run, cfg.graph.pagerank_alpha)
print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": round(time.monotonic() - t0, 2), "result": res}))
"""


def measure(out: Path, dump: Path, scratch: Path, build: bool, chunk_rows: int = 0, config: str = "") -> dict:
    work = scratch / "out"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ingested_copy(out, work, stage_records=True)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(work), str(dump), "1" if build else "0",
                           str(chunk_rows), config], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("dump", type=Path)
    ap.add_argument("--scratch", type=Path, default=None)
    ap.add_argument("--config", default="", help="the TOML OUT was ingested with (graph settings shape its fingerprint)")
    ap.add_argument("--chunk-rows", type=int, default=0, help="set build.LINK_CHUNK_ROWS (0: the default)")
    args = ap.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="build-rss-"))
    try:
        base = measure(args.out, args.dump.resolve(), scratch, build=False, config=args.config)
        built = measure(args.out, args.dump.resolve(), scratch, build=True, chunk_rows=args.chunk_rows,
                        config=args.config)
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"chunk_rows": args.chunk_rows or None, "baseline_maxrss_mb": round(base["maxrss_mb"], 1), "build_maxrss_mb": round(built["maxrss_mb"], 1),
                      "seconds": built["seconds"], "result": built["result"]}, indent=2))


if __name__ == "__main__":
    main()
