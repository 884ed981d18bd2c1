"""Named numpy arrays beside the tables (the CSR link graph), memory-mapped on load.

Layout: ``OUT/arrays/<name>/run=<run_id>/<key>.npy`` plus ``meta.json`` written
last (atomically), so a set without ``meta.json`` is incomplete and is ignored.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hopforge.errors import StorageError


def _set_dir(out: str | Path, name: str, run_id: str) -> Path:
    return Path(out) / "arrays" / name / f"run={run_id}"


def save_arrays(out: str | Path, name: str, run_id: str, arrays: dict[str, np.ndarray],
                meta: dict[str, Any] | None = None) -> Path:
    """Write ``arrays`` as .npy files, then ``meta.json`` (with sha256 per file) atomically."""
    d = _set_dir(out, name, run_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / "meta.json").unlink(missing_ok=True)
    files = {}
    for key, arr in arrays.items():
        tmp = d / f".{key}.npy.tmp"
        # A file object, not a path: np.save appends ".npy" to a path that lacks it.
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        os.replace(tmp, d / f"{key}.npy")
        files[key] = {"sha256": hashlib.sha256((d / f"{key}.npy").read_bytes()).hexdigest(),
                      "dtype": str(arr.dtype), "shape": list(arr.shape)}
    doc = {"name": name, "run": run_id, "files": files, "meta": meta or {},
           "created_at": datetime.now(UTC).isoformat(timespec="milliseconds")}
    tmp = d / ".meta.json.tmp"
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, d / "meta.json")
    return d


def latest_run(out: str | Path, name: str) -> str | None:
    """The most recently completed run of array set ``name``."""
    base = Path(out) / "arrays" / name
    done = []
    for meta in base.glob("run=*/meta.json"):
        doc = orjson.loads(meta.read_bytes())
        done.append((doc["created_at"], doc["run"]))
    return max(done)[1] if done else None


def load_arrays(out: str | Path, name: str, run_id: str | None = None,
                mmap: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a complete array set (memory-mapped by default) and its metadata."""
    run_id = run_id or latest_run(out, name)
    if run_id is None:
        raise StorageError(f"no complete array set {name!r} under {Path(out) / 'arrays'}; run `hopforge ingest` first")
    d = _set_dir(out, name, run_id)
    try:
        doc = orjson.loads((d / "meta.json").read_bytes())
    except FileNotFoundError:
        raise StorageError(f"array set {d} is incomplete (no meta.json)") from None
    arrays = {k: np.load(d / f"{k}.npy", mmap_mode="r" if mmap else None, allow_pickle=False) for k in doc["files"]}
    return arrays, doc["meta"]


CSR_KEYS = ("indptr", "indices", "edge_position", "edge_in_lead")


@dataclass
class CSR:
    """The link graph as written by the graph stage: row pointers, column indices, and per edge
    the position of its link in the source page and whether it sits in the lead."""

    run: str
    indptr: np.ndarray  # int64, n_nodes + 1
    indices: np.ndarray  # int32 destination nodes, sorted within each row
    edge_position: np.ndarray  # int32
    edge_in_lead: np.ndarray  # bool
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return len(self.indptr) - 1


def load_csr(out: str | Path, run: str | None = None) -> CSR:
    """The graph array set of ``run`` (default: the latest complete one), memory-mapped: the one
    CSR loader that every reader of the graph uses."""
    arrays, meta = load_arrays(out, "graph", run)
    missing = set(CSR_KEYS) - arrays.keys()
    if missing:
        raise StorageError(f"graph array set under {Path(out) / 'arrays' / 'graph'} (run={run or meta.get('run')}) "
                           f"lacks {sorted(missing)}; re-run the graph stage")
    return CSR(run or meta.get("run") or latest_run(out, "graph") or "", arrays["indptr"], arrays["indices"],
               arrays["edge_position"], arrays["edge_in_lead"], dict(meta))
