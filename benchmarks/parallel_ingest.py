"""Ingest a multistream dump through the Prefect graph flow on a local Dask cluster and check that
its tables equal a single-machine run of the same dump (``hopforge ingest``), table by table.

    PYTHONPATH=src python benchmarks/parallel_ingest.py --dump /work/bench-scale/scale-100k-multistream.xml.bz2 \\
        --reference /work/bench-scale/out-100000 --batch-pages 1000 --out /work/bench-scale/dask-100k

``--reference`` is an OUT ingested with the same graph settings (here by ``benchmarks/scale.py``,
workers=2 on the local executor). Each table is compared by its row count and an order-free
checksum of every column (DuckDB ``hash`` summed over the rows), so 4M link rows compare in seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

TABLES = ("pages", "links_raw", "redirects_raw", "redirects", "links", "nodes")  # ingest_batches holds timings


def checksum(out: Path, table: str) -> tuple[int, str]:
    """Rows and the sum of every row's hash (all columns, as a struct): equal for equal tables in any order."""
    from hopforge.storage import query_arrow

    row = query_arrow(out, f"SELECT count(*) AS n, sum(hash(t))::VARCHAR AS h FROM {table} t").to_pylist()[0]
    return row["n"], row["h"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dump", type=Path, required=True)
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch-pages", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    from distributed import Client, LocalCluster

    from hopforge.flows import run_pipeline

    if a.out.exists():
        shutil.rmtree(a.out)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        summary, state = run_pipeline(None, {"run.out": str(a.out), "graph.dump": str(a.dump),
                                             "graph.batch_pages": a.batch_pages, "flows.task_runner": "dask",
                                             "flows.dask_address": cluster.scheduler_address}, stages=["graph"])
        ran = client.run(lambda: "hopforge.graph.ingest" in sys.modules)
    wall = time.perf_counter() - t0
    if not state.is_completed():
        sys.exit(f"flow failed: {state.message}")
    graph = {s["stage"]: s for s in summary["stages"]}["graph"]
    result = {"dump": a.dump.name, "workers": a.workers, "workers_that_parsed": sum(ran.values()),
              "tasks": graph.get("ran"), "wall_s": round(wall, 1), "tables": {}}
    same = True
    for table in TABLES:
        mine, ref = checksum(a.out, table), checksum(a.reference, table)
        result["tables"][table] = {"rows": mine[0], "equal": mine == ref}
        same &= mine == ref
    result["identical"] = same
    print(json.dumps(result, indent=1))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
