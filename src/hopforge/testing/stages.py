"""Hand-made stage output for tests and benchmarks: rows committed under the fingerprint a config
resolves to, and the stage recorded complete, exactly as if the stage had produced them.

The pipeline's stages never import this; tests use it to start a later stage on small,
hand-checked inputs (ten rows for a filter) without running everything before it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hopforge.config import Config
from hopforge.stage import Batch, StageRun, StageStats, resolve
from hopforge.storage.arrays import save_arrays

FIXTURE = Batch("fixture", 0)


def complete_stage(cfg: Config, stage: str, tables: Mapping[str, pa.Table | list[dict[str, Any]]],
                   *, arrays: Mapping[str, np.ndarray] | None = None) -> StageRun:
    """Commit ``tables`` as the output of ``stage`` under ``cfg`` and mark the stage complete.

    For the graph stage, ``arrays`` (the CSR set) default to an edgeless graph over the
    ``nodes`` rows (or the ``pages`` rows), enough for the search environment."""
    run = resolve(cfg, stage)
    run.record()
    run.commit(tables, FIXTURE)
    if stage == "graph":
        n = len(tables.get("nodes", tables.get("pages", [])))
        csr = dict(arrays or {"indptr": np.zeros(n + 1, np.int64), "indices": np.zeros(0, np.int32),
                              "edge_position": np.zeros(0, np.int32), "edge_in_lead": np.zeros(0, bool)})
        save_arrays(run.out, "graph", run.fingerprint, csr, meta={"run": run.fingerprint, "n_nodes": n,
                                                                   "n_edges": int(len(csr["indices"]))})
    run.mark_done(FIXTURE, StageStats(batches=1))
    run.mark_complete(StageStats(batches=1), 1)
    return run


def complete_chain(cfg: Config, outputs: Mapping[str, Mapping[str, pa.Table | list[dict[str, Any]]]]
                   ) -> dict[str, StageRun]:
    """:func:`complete_stage` for several stages in data-flow order; stages not named are recorded
    complete with no rows (e.g. a screen that dropped nothing)."""
    from hopforge.stage import STAGES

    last = max(STAGES.index(s) for s in outputs)
    return {s: complete_stage(cfg, s, outputs.get(s, {})) for s in STAGES[: last + 1]}


# The tables the graph stage's batches write: everything but the build's output.
INGEST_TABLES = ("pages", "links_raw", "redirects_raw", "ingest_batches", "rejects")


def ingested_copy(src: Path, dest: Path, *, stage_records: bool = False) -> Path:
    """The ingest tables of OUT ``src`` copied to ``dest`` without the graph build's output (and,
    with ``stage_records``, the stage records under ``_stages``), so the graph stage re-finds its
    committed batches in the manifests and only builds the graph."""
    for t in (*INGEST_TABLES, "_stages") if stage_records else INGEST_TABLES:
        if (src / t).exists():
            shutil.copytree(src / t, dest / t)
    man = dest / "rejects" / "_manifest.jsonl"
    if man.exists():  # drop the build's own rejects (batch build_graph), which would mark it done
        lines = [ln for ln in man.read_text().splitlines() if '"batch":"build_graph"' not in ln]
        man.write_text("".join(f"{ln}\n" for ln in lines))
        keep = {json.loads(ln)["path"] for ln in lines}
        for p in (dest / "rejects").glob("run=*/part-*.parquet"):
            if str(p.relative_to(dest / "rejects")) not in keep:
                p.unlink()
    return dest
