"""Digests of what a task reads, so its cache key changes when its input data does.

Prefect's ``INPUTS`` cache policy hashes a task's arguments. A stage task's
arguments are the config and a batch descriptor, which do not change when an
upstream table gains rows (a re-run completing shards that failed before);
a cached ``run_filters`` would then never see the new trajectories. Passing the
digest of the manifests of the tables a task reads as an argument closes that
hole: manifests are append-only and record each shard's sha256, so the digest
changes exactly when the data read changes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hopforge import __version__

MANIFEST = "_manifest.jsonl"


def tables_digest(out: str | Path, tables: tuple[str, ...]) -> str:
    """sha256 over the manifests of ``tables`` under ``out`` (and the package version).

    A table not written yet contributes "absent". The hopforge version is folded
    in so an upgraded package recomputes instead of reusing old results.
    """
    h = hashlib.sha256(f"hopforge {__version__}\n".encode())
    for table in sorted(tables):
        h.update(f"\0{table}\0".encode())
        manifest = Path(out) / table / MANIFEST
        try:
            h.update(manifest.read_bytes())
        except FileNotFoundError:
            h.update(b"absent")
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """Cheap identity of an input file: resolved path, size and mtime (not its bytes:
    hashing a multi-GB dump on every run would cost minutes)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return f"{p.resolve()}:absent"
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}:{os.path.basename(p)}"
