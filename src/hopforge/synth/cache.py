"""Per-graph-run caches of the question stage's dump-wide structures, under ``OUT/_cache``.

The fact graph (:mod:`hopforge.synth.factgraph`) and the clue index (:mod:`hopforge.synth.clues`)
are computed from every link or page of a graph run: minutes at 100k pages, hours at enwiki. Each
is computed once per graph run, by the first process that needs it, and written as a directory of
``.npy`` arrays and Arrow IPC files that every later process memory-maps instead of rebuilding.

A cache directory is named by a key over the graph run's input shards (their manifest checksums)
and the source of the code that computes it, so new shards or a changed lexicon build a new one.
It is written into a temporary sibling and renamed into place with ``meta.json`` last, so a
directory with ``meta.json`` is complete; one that cannot be read is named in the log, removed
and rebuilt (:func:`cached`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import orjson
import pyarrow as pa

from hopforge.errors import StorageError
from hopforge.storage import read_manifest

log = logging.getLogger(__name__)

T = TypeVar("T")

META = "meta.json"
READ_ERRORS = (OSError, ValueError, KeyError, pa.ArrowInvalid, orjson.JSONDecodeError)


def cache_dir(out: str | Path, graph_run: str, kind: str, tables: Iterable[str], code: Iterable[ModuleType],
              version: int) -> Path:
    """``OUT/_cache/<kind>-<key>``: the key hashes ``version``, the graph run, the manifest
    checksums of its ``tables`` and the source files of the ``code`` modules."""
    h = hashlib.sha256(f"{kind}{version}|{graph_run}".encode())
    for table in tables:
        for info in read_manifest(out, table):
            if info.run == graph_run:
                h.update(f"{table}:{info.path}:{info.sha256}".encode())
    for module in code:
        h.update(Path(str(module.__file__)).read_bytes())
    return Path(out) / "_cache" / f"{kind}-{h.hexdigest()[:16]}"


Tables = dict[str, "pa.Table | tuple[pa.Schema, Iterable[pa.Table]]"]


def write_atomically(path: Path, arrays: dict[str, np.ndarray] | Callable[[], dict[str, np.ndarray]],
                     tables: Tables, meta: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
    """Write ``name.arrow`` per table, ``name.npy`` per array and ``meta.json`` into a temporary
    sibling of ``path``, fsync them and rename it to ``path``. A table may be given as (schema,
    iterable of tables), written as it streams; ``arrays`` and ``meta`` may be functions, called
    after the tables are written. Another process's finished copy already there wins (same key,
    same content)."""
    tmp = scratch_dir(path.parent, f".{path.name}-")
    try:
        for name, table in tables.items():
            schema, parts = (table.schema, [table]) if isinstance(table, pa.Table) else table
            with pa.OSFile(str(tmp / f"{name}.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                for part in parts:
                    writer.write_table(part, max_chunksize=1 << 16)
        for name, arr in (arrays() if callable(arrays) else arrays).items():
            np.save(tmp / f"{name}.npy", arr)
        (tmp / META).write_bytes(orjson.dumps(meta() if callable(meta) else meta))
        for f in tmp.iterdir():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / META).exists():  # not another process's finished copy: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def scratch_dir(parent: Path, prefix: str) -> Path:
    """A new directory ``<prefix><host>-<pid>-<random>`` under ``parent``, after removing those of
    the same prefix that a process of this host left behind when it died (a SIGKILLed build's
    spilled links can be tens of GB at enwiki)."""
    parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for old in parent.glob(f"{prefix}{host}-*-*"):
        pid = old.name[len(prefix) + len(host) + 1:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by process %s, which is gone", old, pid)
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{host}-{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def read_dir(path: Path, arrays: Iterable[str], tables: Iterable[str]) -> tuple[dict[str, Any], dict[str, np.ndarray],
                                                                              dict[str, pa.Table]]:
    """``meta.json``, the arrays (memory-mapped, read-only) and the tables (memory-mapped Arrow) of a
    cache directory; :class:`StorageError` naming the directory if any is missing or unreadable."""
    what = f"{path.name.split('-')[0]} cache {path}"
    try:
        meta = orjson.loads((path / META).read_bytes())
        if not isinstance(meta, dict):
            raise ValueError(f"{META} is not an object")
        arrs = {name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in arrays}
        tabs = {name: pa.ipc.open_file(pa.memory_map(str(path / f"{name}.arrow"), "r")).read_all() for name in tables}
    except READ_ERRORS as e:
        raise StorageError(f"{what} is unreadable: {e}") from None
    return meta, arrs, tabs


def inconsistent(path: Path, problems: list[str]) -> None:
    """Raise :class:`StorageError` listing ``problems`` of the cache at ``path``, if there are any."""
    if problems:
        raise StorageError(f"{path.name.split('-')[0]} cache {path} is inconsistent: " + "; ".join(problems))


def cached(path: Path, load: Callable[[Path], T], build: Callable[[], Any], save: Callable[[Any, Path], None]) -> T:
    """``load(path)``, or ``save(build(), path)`` first. A cache that cannot be read is named in the
    log, removed and rebuilt; a directory without ``meta.json`` (a crashed writer) is removed."""
    if (path / META).exists():
        try:
            return load(path)
        except StorageError as e:
            log.warning("%s; rebuilding it", e)
            shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
    built = build()
    save(built, path)
    del built
    return load(path)
