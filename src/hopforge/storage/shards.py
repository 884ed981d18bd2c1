"""Shard writer, manifests and readers: the one way stages write and read data.

Layout (Hive style)::

    OUT/<table>/run=<run_id>/part-NNNNN.parquet   zstd Parquet shards
    OUT/<table>/_manifest.jsonl                   one JSON line per shard

A shard is written to a hidden temp name, fsynced, then hard-linked to its
final name: ``os.link`` fails instead of overwriting, so two writers in one
directory never clobber each other, and a reader globbing ``part-*.parquet``
never sees a half-written file. The manifest line is appended (under an
exclusive ``flock``) only after the shard is visible; a crash between the two
leaves a complete but unrecorded shard, which :func:`verify` reports.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from hopforge import __version__
from hopforge.errors import StorageError
from hopforge.storage.schemas import SCHEMA_VERSIONS, check_version, schema_for

MANIFEST = "_manifest.jsonl"
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
TARGET_ROW_GROUP_BYTES = 64 * 1024 * 1024


def table_dir(out: str | Path, table: str) -> Path:
    return Path(out) / table


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class ShardInfo:
    """One manifest line."""

    table: str
    run: str
    path: str  # relative to the table directory
    rows: int
    bytes: int
    sha256: str
    schema_version: int
    config_hash: str
    hopforge_version: str
    created_at: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ShardInfo:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _clean_stale_temps(run_dir: Path) -> None:
    """Remove temp files left by writers on this host that are no longer alive."""
    host = socket.gethostname()
    for tmp in run_dir.glob(".tmp-*"):
        parts = tmp.name.split("-")
        # .tmp-<host>-<pid>-<uuid>.parquet ; host may contain '-', so parse from the right
        try:
            pid = int(parts[-2])
            tmp_host = "-".join(parts[1:-2])
        except (ValueError, IndexError):
            continue
        if tmp_host == host and not _pid_alive(pid):
            tmp.unlink(missing_ok=True)


def write_shard(
    out: str | Path,
    table: str,
    data: pa.Table,
    *,
    run_id: str,
    config_hash: str = "",
) -> ShardInfo:
    """Atomically write ``data`` as one new shard of ``table`` and record it."""
    schema = schema_for(table)
    if not data.schema.equals(schema, check_metadata=False):
        try:
            data = data.select(schema.names).cast(schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise StorageError(f"rows for table {table!r} do not match its schema: {e}") from None
    data = data.replace_schema_metadata(schema.metadata)
    tdir = table_dir(out, table)
    run_dir = tdir / f"run={run_id}"
    run_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale_temps(run_dir)

    tmp = run_dir / f".tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}.parquet"
    avg = max(1, data.nbytes // max(1, data.num_rows))
    row_group = max(1_000, min(1_000_000, TARGET_ROW_GROUP_BYTES // avg))
    try:
        # Page CRCs let every read (not only `hopforge inspect`) catch a flipped bit: zstd's own
        # checks miss some, which then decode silently to wrong values.
        pq.write_table(data, tmp, compression="zstd", compression_level=3, row_group_size=row_group,
                       write_page_checksum=True)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = _sha256(tmp)
        size = tmp.stat().st_size
        final = _link_next_part(run_dir, tmp)
    except OSError as e:
        raise StorageError(f"could not write shard for table {table!r} in {run_dir}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(run_dir)

    info = ShardInfo(
        table=table,
        run=run_id,
        path=str(final.relative_to(tdir)),
        rows=data.num_rows,
        bytes=size,
        sha256=digest,
        schema_version=SCHEMA_VERSIONS[table],
        config_hash=config_hash,
        hopforge_version=__version__,
        created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    _append_manifest(tdir, info)
    return info


def _link_next_part(run_dir: Path, tmp: Path) -> Path:
    existing = [int(m.group(1)) for p in run_dir.iterdir() if (m := PART_RE.match(p.name))]
    n = max(existing, default=-1) + 1
    while True:
        final = run_dir / f"part-{n:05d}.parquet"
        try:
            os.link(tmp, final)  # atomic, and never overwrites another writer's shard
            return final
        except FileExistsError:
            n += 1


def _append_manifest(tdir: Path, info: ShardInfo) -> None:
    line = orjson.dumps(info.__dict__) + b"\n"
    with open(tdir / MANIFEST, "ab") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_manifest(out: str | Path, table: str) -> list[ShardInfo]:
    """Manifest entries of ``table``; raises on a newer schema version or a bad line."""
    path = table_dir(out, table) / MANIFEST
    if not path.exists():
        return []
    entries = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = orjson.loads(line)
                info = ShardInfo.from_json(d)
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                raise StorageError(f"{path}:{lineno}: unreadable manifest line ({e})") from None
            check_version(table, int(info.schema_version), f"{path}:{lineno}")
            entries.append(info)
    return entries


def shard_paths(out: str | Path, table: str, run: str | None = None) -> list[Path]:
    """Visible shards of ``table`` (optionally one run), in a stable order."""
    tdir = table_dir(out, table)
    pattern = f"run={run}/part-*.parquet" if run else "run=*/part-*.parquet"
    return sorted(tdir.glob(pattern))


@dataclass
class VerifyReport:
    table: str
    ok: int
    changed: list[str]  # bytes differ from the manifest's sha256
    missing: list[str]  # in the manifest, not on disk
    unrecorded: list[str]  # on disk, not in the manifest

    @property
    def clean(self) -> bool:
        return not (self.changed or self.missing or self.unrecorded)


def verify(out: str | Path, table: str) -> VerifyReport:
    """Recompute every shard's sha256 and compare with the manifest."""
    tdir = table_dir(out, table)
    entries = {e.path: e for e in read_manifest(out, table)}
    on_disk = {str(p.relative_to(tdir)) for p in shard_paths(out, table)}
    report = VerifyReport(table, 0, [], [], sorted(on_disk - entries.keys()))
    for rel, info in sorted(entries.items()):
        p = tdir / rel
        if not p.exists():
            report.missing.append(rel)
        elif _sha256(p) != info.sha256:
            report.changed.append(rel)
        else:
            report.ok += 1
    return report


def _parquet_format() -> Any:  # pyarrow.dataset is imported lazily: it pulls in pandas (~0.4 s)
    """Parquet read options for datasets: verify page CRCs (shards carry them; older ones without still read)."""
    import pyarrow.dataset as pads

    return pads.ParquetFileFormat(
        default_fragment_scan_options=pads.ParquetFragmentScanOptions(page_checksum_verification=True))


def _read_shard(path: Path, schema: pa.Schema, columns: list[str] | None) -> pa.Table:
    """One shard as ``schema`` (projected to ``columns``): columns an older schema version lacks read as nulls."""
    pf = pq.ParquetFile(path, page_checksum_verification=True)
    names = schema.names if columns is None else columns
    have = set(pf.schema_arrow.names)
    data = pf.read(columns=[c for c in names if c in have])
    fields = [schema.field(c) for c in names]
    arrays = [data.column(f.name).cast(f.type) if f.name in have else pa.nulls(data.num_rows, f.type)
              for f in fields]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=schema.metadata))


def _unreadable(out: str | Path, table: str, e: Exception) -> StorageError:
    """A read error naming the shards whose bytes no longer match the manifest, if any."""
    try:
        bad = verify(out, table).changed
    except (StorageError, OSError):
        bad = []
    where = f"; shard(s) changed since written: {', '.join(bad)} (see `hopforge inspect {table}`)" if bad else ""
    return StorageError(f"cannot read table {table!r} under {table_dir(out, table)}: {e}{where}")


def read_table(
    out: str | Path, table: str, *, run: str | None = None, columns: list[str] | None = None
) -> pa.Table:
    """All rows of ``table`` (an empty table with the schema if none are written)."""
    read_manifest(out, table)  # refuses data from a newer schema version
    schema = schema_for(table)
    paths = shard_paths(out, table, run)
    if not paths:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    if columns:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise StorageError(f"table {table!r} has no column(s) {missing}; it has {schema.names}")
    try:
        if columns == []:  # the row count only (a table with no columns keeps its length; concat would not)
            rows = sum(pq.ParquetFile(p, page_checksum_verification=True).metadata.num_rows for p in paths)
            return pa.table({"_": pa.nulls(rows)}).select([])  # (replacing its metadata would reset the length)
        return pa.concat_tables([_read_shard(p, schema, columns) for p in paths])
    except (pa.ArrowException, OSError, ValueError) as e:  # a flipped footer byte can fail as UnicodeDecodeError
        raise _unreadable(out, table, e) from None


def existing_ids(out: str | Path, table: str, column: str) -> set[Any]:
    """Values of ``column`` already written to ``table``, for resume and dedup."""
    return set(read_table(out, table, columns=[column]).column(column).to_pylist())


class ShardWriter:
    """Buffers rows for one table and writes a shard every ``rows_per_shard`` rows.

    Use as a context manager; leaving the block flushes what is buffered, also on
    error, so rows accepted before a crash in the caller are not lost.
    """

    def __init__(
        self,
        out: str | Path,
        table: str,
        *,
        run_id: str,
        config_hash: str = "",
        rows_per_shard: int = 100_000,
        flush_seconds: float | None = None,
    ) -> None:
        self.out = Path(out)
        self.table = table
        self.schema = schema_for(table)
        self.run_id = run_id
        self.config_hash = config_hash
        self.rows_per_shard = rows_per_shard
        self.flush_seconds = flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._names = set(self.schema.names)
        self.shards: list[ShardInfo] = []
        self.rows_written = 0

    def write(self, row: Mapping[str, Any]) -> None:
        extra = row.keys() - self._names
        if extra:
            raise StorageError(f"row for table {self.table!r} has unknown columns: {sorted(extra)}")
        self._rows.append(dict(row))
        if len(self._rows) >= self.rows_per_shard or (
            self.flush_seconds is not None and time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def write_table(self, data: pa.Table) -> None:
        """Write an Arrow table directly (flushing buffered rows first)."""
        self.flush()
        if data.num_rows:
            self._record(write_shard(self.out, self.table, data, run_id=self.run_id, config_hash=self.config_hash))

    def flush(self) -> ShardInfo | None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return None
        rows, self._rows = self._rows, []
        try:
            data = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise StorageError(f"rows for table {self.table!r} do not match its schema: {e}") from None
        info = write_shard(self.out, self.table, data, run_id=self.run_id, config_hash=self.config_hash)
        self._record(info)
        return info

    def _record(self, info: ShardInfo) -> None:
        self.shards.append(info)
        self.rows_written += info.rows

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def iter_batches(out: str | Path, table: str, batch_size: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Stream ``table`` in record batches without loading it whole."""
    read_manifest(out, table)
    paths = shard_paths(out, table)
    if not paths:
        return
    import pyarrow.dataset as pads

    ds = pads.dataset([str(p) for p in paths], schema=schema_for(table), format=_parquet_format())
    try:
        yield from ds.to_batches(batch_size=batch_size)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(out, table, e) from None
