"""Shard writer, manifests and readers: the one way stages write and read data.

Layout (Hive style)::

    OUT/<table>/run=<run_id>/part-NNNNN.parquet   zstd Parquet shards
    OUT/<table>/_manifest.jsonl                   one JSON line per shard
    OUT/_journal/<uuid>.json                      groups being committed (normally none)

A shard is written to a hidden temp name, fsynced, then hard-linked to its
final name: ``os.link`` fails instead of overwriting, so two writers in one
directory never clobber each other, and a reader globbing ``part-*.parquet``
never sees a half-written file. The manifest line is appended (under an
exclusive ``flock``) only after the shard is visible.

Shards are committed in groups (:func:`write_group`; :func:`write_shard` is a
group of one) with a roll-forward journal: once every temp of the group is
durable, a journal naming them is written atomically, then the temps are linked
and recorded, then the journal is deleted. A writer that dies before its journal
exists leaves only temps, which the next writer cleans; one that dies after
leaves a journal, and :func:`recover` finishes the group. So after ``recover``
a group is either wholly visible and recorded or not at all. (A reader that
runs during a commit may still see a prefix of a group: visibility is per file.)
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from hopforge import __version__
from hopforge.errors import StorageError
from hopforge.storage.schemas import SCHEMA_VERSIONS, SCHEMAS, check_version, schema_for

log = logging.getLogger(__name__)

MANIFEST = "_manifest.jsonl"
JOURNAL_DIR = "_journal"
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
TARGET_ROW_GROUP_BYTES = 64 * 1024 * 1024
# A journal written on another host is abandoned once this old: its pid means nothing here, and a
# group commit takes milliseconds to seconds, so ten minutes leaves a wide margin.
STALE_JOURNAL_S = 600.0


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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
    batch: str | None = None  # the unit of work that wrote it (e.g. an ingest batch id), if any

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ShardInfo:
        # Lines written before batches existed lack "batch": they belong to no batch.
        return cls(**{k: d[k] for k in _REQUIRED_FIELDS}, batch=d.get("batch"))


_REQUIRED_FIELDS = tuple(f.name for f in fields(ShardInfo) if f.name != "batch")


# -- temp files ---------------------------------------------------------------------------------------------


def _temp_name(suffix: str) -> str:
    return f".tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}{suffix}"


def _temp_writer(name: str) -> tuple[str, int] | None:
    """(host, pid) of a ``.tmp-<host>-<pid>-<uuid><suffix>`` name; host may contain '-', so parse from the right."""
    parts = name.split("-")
    try:
        return "-".join(parts[1:-2]), int(parts[-2])
    except (ValueError, IndexError):
        return None


def _dead_temps(directory: Path) -> list[Path]:
    """Temps in ``directory`` written by processes on this host that are no longer alive."""
    host = socket.gethostname()
    dead = []
    for tmp in directory.glob(".tmp-*"):
        writer = _temp_writer(tmp.name)
        if writer is not None and writer[0] == host and not _pid_alive(writer[1]):
            dead.append(tmp)
    return dead


def _clean_stale_temps(out: Path, run_dirs: Iterable[Path]) -> None:
    """Remove temps left by dead writers on this host, except those a journal still needs.

    The journals are read after the liveness checks: a writer already found dead cannot write a
    journal afterwards, so no temp that :func:`recover` will link is ever deleted.
    """
    stale = [tmp for d in run_dirs for tmp in _dead_temps(d)]
    if not stale:
        return
    try:
        needed = _journaled_temps(out)
    except StorageError as e:
        log.warning("not cleaning temp files under %s: %s", out, e)
        return
    for tmp in stale:
        if tmp.name not in needed:
            tmp.unlink(missing_ok=True)


# -- group commit -------------------------------------------------------------------------------------------


def _conform(table: str, data: pa.Table) -> pa.Table:
    schema = schema_for(table)
    if not data.schema.equals(schema, check_metadata=False):
        try:
            data = data.select(schema.names).cast(schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise StorageError(f"rows for table {table!r} do not match its schema: {e}") from None
    return data.replace_schema_metadata(schema.metadata)


def _write_parquet(data: pa.Table, path: Path) -> None:
    avg = max(1, data.nbytes // max(1, data.num_rows))
    row_group = max(1_000, min(1_000_000, TARGET_ROW_GROUP_BYTES // avg))
    # Page CRCs let every read (not only `hopforge inspect`) catch a flipped bit: zstd's own
    # checks miss some, which then decode silently to wrong values.
    pq.write_table(data, path, compression="zstd", compression_level=3, row_group_size=row_group,
                   write_page_checksum=True)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _info(entry: Mapping[str, Any], path: str) -> ShardInfo:
    """The manifest line of a journal entry, once its shard has a final ``path``."""
    return ShardInfo(path=path, **{k: entry[k] for k in _REQUIRED_FIELDS if k != "path"}, batch=entry["batch"])


def write_group(
    out: str | Path,
    tables: Mapping[str, pa.Table | Iterable[pa.Table | pa.RecordBatch]],
    *,
    run_id: str,
    batch: str | None = None,
    config_hash: str = "",
) -> list[ShardInfo]:
    """Write each non-empty table as one new shard, all of them committed as a unit.

    A value may also be an iterable of tables or record batches: each non-empty one becomes a
    shard of its own, written as it comes (so a table larger than memory can join a group).
    If the writer dies before the group's journal exists, none of the shards becomes visible;
    if it dies later, :func:`recover` makes the rest visible. Every shard's manifest line carries
    ``batch``. Returns the shards in the order of ``tables`` (empty tables are skipped).
    """
    with GroupWriter(out, run_id=run_id, batch=batch, config_hash=config_hash) as group:
        for table, data in tables.items():
            for part in ([data] if isinstance(data, (pa.Table, pa.RecordBatch)) else data):
                group.add(table, part)
        return group.commit()


def write_shard(
    out: str | Path,
    table: str,
    data: pa.Table,
    *,
    run_id: str,
    config_hash: str = "",
    batch: str | None = None,
) -> ShardInfo:
    """Atomically write ``data`` as one new shard of ``table`` (even if empty) and record it."""
    with GroupWriter(out, run_id=run_id, batch=batch, config_hash=config_hash) as group:
        group.add(table, data, keep_empty=True)
        return group.commit()[0]


class GroupWriter:
    """One group commit whose shards are written one at a time, as they come.

    :meth:`add` writes a shard to a hidden temp (durable, invisible); :meth:`commit` writes the
    group's journal, then links and records every shard, exactly as :func:`write_group` does (which
    is built on this). Only the shard being written is in memory, so a table of any size can be
    added in pieces. Leaving the ``with`` block without :meth:`commit` (an error in the caller) drops
    the temps: nothing of the group becomes visible. A process that dies before committing leaves
    only temps, which the next writer or :func:`recover` deletes.
    """

    def __init__(self, out: str | Path, *, run_id: str, batch: str | None = None, config_hash: str = "") -> None:
        self.out = Path(out)
        self.run_id = run_id
        self.batch = batch
        self.config_hash = config_hash
        self.created_at = _now()
        self._run_dirs: dict[str, Path] = {}
        self._temps: list[Path] = []
        self._entries: list[dict[str, Any]] = []
        self._done = False
        self.infos: list[ShardInfo] = []  # the committed shards, once committed

    def _dir(self, table: str) -> Path:
        d = self._run_dirs.get(table)
        if d is None:
            d = table_dir(self.out, table) / f"run={self.run_id}"
            d.mkdir(parents=True, exist_ok=True)
            _clean_stale_temps(self.out, [d])
            self._run_dirs[table] = d
        return d

    def add(self, table: str, data: pa.Table | pa.RecordBatch, *, keep_empty: bool = False) -> int:
        """Write ``data`` as one more shard of ``table`` in this group (skipped when empty, unless
        ``keep_empty``); returns its rows."""
        if self._done:
            raise StorageError("this group is already committed or abandoned")
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if not data.num_rows and not keep_empty:
            return 0
        data = _conform(table, data)
        try:
            d = self._dir(table)
            tmp = d / _temp_name(".parquet")
            self._temps.append(tmp)
            _write_parquet(data, tmp)
            self._entries.append({
                "table": table, "run": self.run_id, "temp": str(tmp.relative_to(self.out)), "sha256": _sha256(tmp),
                "rows": data.num_rows, "bytes": tmp.stat().st_size, "schema_version": SCHEMA_VERSIONS[table],
                "batch": self.batch, "config_hash": self.config_hash, "hopforge_version": __version__,
                "created_at": self.created_at,
            })
        except OSError as e:
            self.abandon()
            raise StorageError(f"could not write shard(s) in {self._where()}: {e}") from e
        return data.num_rows

    @property
    def rows(self) -> dict[str, int]:
        """Rows added so far, per table."""
        out: dict[str, int] = {}
        for e in self._entries:
            out[e["table"]] = out.get(e["table"], 0) + e["rows"]
        return out

    def _where(self) -> str:
        return ", ".join(str(d) for d in self._run_dirs.values())

    def abandon(self) -> None:
        """Drop every shard written so far (none of them was visible)."""
        self._done = True
        for tmp in self._temps:
            tmp.unlink(missing_ok=True)
        self._temps, self._entries = [], []

    def commit(self) -> list[ShardInfo]:
        """Make every shard of the group visible and recorded, as a unit; returns them in order."""
        if self._done:
            raise StorageError("this group is already committed or abandoned")
        self._done = True
        out, entries, temps, run_dirs = self.out, self._entries, self._temps, self._run_dirs
        if not entries:
            return []
        journal: tuple[Path, int] | None = None
        try:
            for d in set(run_dirs.values()):
                _fsync_dir(d)  # the journal must not name a temp whose directory entry a power cut could lose
            journal = _write_journal(out, entries)
        except OSError as e:
            raise StorageError(f"could not write shard(s) in {self._where()}: {e}") from e
        finally:
            if journal is None:
                for tmp in temps:
                    tmp.unlink(missing_ok=True)

        path, fd = journal
        try:
            finals = [_link_next_part(run_dirs[e["table"]], out / e["temp"]) for e in entries]
            for d in set(run_dirs.values()):
                _fsync_dir(d)  # no manifest line may name a link that a power cut could lose
            infos = [_info(e, str(final.relative_to(table_dir(out, e["table"]))))
                     for e, final in zip(entries, finals, strict=True)]
            for info in infos:
                _append_manifest(table_dir(out, info.table), info)
        except OSError as e:
            raise StorageError(
                f"could not commit shard(s) in {self._where()}: {e}; the journal {path} lets `recover` finish "
                "the group") from e
        finally:
            os.close(fd)  # releases the journal's lock: recover() may take it from here
        path.unlink()
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        self.infos = infos
        return infos

    @property
    def done(self) -> bool:
        """Committed or abandoned: no more shards may be added."""
        return self._done

    def __enter__(self) -> GroupWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self._done:
            self.abandon()  # an error in the caller, or no commit: nothing becomes visible


def _write_journal(out: Path, entries: list[dict[str, Any]]) -> tuple[Path, int]:
    """Write the group's journal atomically; return it with an open fd holding its ``flock``.

    The lock is taken before the journal gets its final name and held until the group is
    committed, so :func:`recover` never works on a journal whose writer is still at it.
    """
    jdir = out / JOURNAL_DIR
    jdir.mkdir(parents=True, exist_ok=True)
    tmp = jdir / _temp_name(".json")
    path = jdir / f"{uuid.uuid4().hex}.json"
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "created_at": _now(), "shards": entries}
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        _fsync_dir(jdir)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return path, fd


def _read_journal(path: Path) -> dict[str, Any] | None:
    """A journal's contents; None if it is gone (finished meanwhile)."""
    try:
        doc = orjson.loads(path.read_bytes())
        problem = next((f"a shard lacks {sorted(_ENTRY_KEYS - e.keys())}" for e in doc["shards"]
                        if not _ENTRY_KEYS <= e.keys()), None)
    except FileNotFoundError:
        return None
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        problem = str(e) or type(e).__name__
    if problem:
        raise StorageError(f"{path}: unreadable group-commit journal ({problem}); delete it if its shards are "
                           f"not needed")
    return doc


_ENTRY_KEYS = {*_REQUIRED_FIELDS, "batch", "temp"} - {"path"}


def _journal_paths(out: Path) -> list[Path]:
    jdir = out / JOURNAL_DIR
    return sorted(p for p in jdir.glob("*.json") if not p.name.startswith(".")) if jdir.is_dir() else []


def _journaled_temps(out: Path) -> set[str]:
    """File names of every temp that some journal under ``out`` still lists."""
    names = set()
    for path in _journal_paths(out):
        doc = _read_journal(path)
        if doc is not None:
            names.update(Path(e["temp"]).name for e in doc["shards"])
    return names


def recover(out: str | Path, *, stale_after_s: float = STALE_JOURNAL_S) -> int:
    """Finish every group commit whose writer died after writing its journal; return how many.

    A journal is abandoned when its writer ran on this host and is no longer alive (or is this
    process, which gave up on it after an error), or ran on another host and the journal is older
    than ``stale_after_s`` seconds. Each of its shards that is not yet recorded is linked (unless
    already visible) and recorded; then the journal and its temps are deleted. Idempotent, and safe
    beside live writers and other ``recover`` calls: each journal is handled under its ``flock``,
    which a live writer holds until its group is committed. Also deletes the temps of dead writers
    on this host that no journal lists.
    """
    out = Path(out)
    recovered = sum(_recover_journal(out, path, stale_after_s) for path in _journal_paths(out))
    jdir = out / JOURNAL_DIR
    if jdir.is_dir():
        for tmp in _dead_temps(jdir):  # journals whose writer died before renaming them: nothing to finish
            tmp.unlink(missing_ok=True)
    _clean_stale_temps(out, [d for table in SCHEMAS for d in table_dir(out, table).glob("run=*")])
    return recovered


def _recover_journal(out: Path, path: Path, stale_after_s: float) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)  # read-write: flock over NFS is emulated with locks that need it
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer, or another recover(), is at it
        doc = _read_journal(path)  # None: another recover() finished it between our open and our lock
        if doc is None or not _abandoned(doc, path, stale_after_s):
            return False
        for entry in doc["shards"]:
            _roll_forward(out, entry, path)
        path.unlink()
        for entry in doc["shards"]:
            (out / entry["temp"]).unlink(missing_ok=True)
        log.warning("finished the group commit of %s (pid %s on host %s) from %s: %s", doc.get("created_at"),
                    doc.get("pid"), doc.get("host"), path.name,
                    ", ".join(f"{e['table']} run={e['run']}" for e in doc["shards"]))
        return True
    finally:
        os.close(fd)


def _abandoned(doc: Mapping[str, Any], path: Path, stale_after_s: float) -> bool:
    if doc.get("host") == socket.gethostname():
        # We hold the journal's lock, so its writer is no longer committing; a live writer in another
        # process may still retry, though, so only a dead one's group (or our own) is ours to finish.
        return doc.get("pid") == os.getpid() or not _pid_alive(int(doc.get("pid", 0)))
    return time.time() - path.stat().st_mtime > stale_after_s


def _roll_forward(out: Path, entry: Mapping[str, Any], journal: Path) -> None:
    """Make one journaled shard visible and recorded, whatever part of that was done before."""
    tdir = table_dir(out, entry["table"])
    run_dir = tdir / f"run={entry['run']}"
    temp = out / entry["temp"]
    recorded = [i for i in read_manifest(out, entry["table"]) if i.run == entry["run"]]
    if temp.exists():
        # The temp and its final part are one inode, which tells exactly which part (if any) it became,
        # even when another shard of the run happens to have the same bytes.
        final = _linked_part(run_dir, temp)
        if final is None:
            if _sha256(temp) != entry["sha256"]:
                raise StorageError(f"{journal}: {temp} no longer matches its sha256; delete the journal to drop "
                                   f"the rest of its group")
            final = _link_next_part(run_dir, temp)
            _fsync_dir(run_dir)
        rel = str(final.relative_to(tdir))
        if not any(i.path == rel for i in recorded):
            _append_manifest(tdir, _info(entry, rel))
        return
    # The temp is gone (a crash while deleting temps after a power cut undid the journal's deletion):
    # go by content, as the part must have been linked before any temp was deleted.
    if any(i.sha256 == entry["sha256"] and i.batch == entry["batch"] for i in recorded):
        return
    final = _part_with_sha(run_dir, entry["sha256"], entry["bytes"])
    if final is None:
        raise StorageError(f"{journal}: {temp} is gone and no part in {run_dir} has its sha256; delete the "
                           f"journal to drop the rest of its group")
    _append_manifest(tdir, _info(entry, str(final.relative_to(tdir))))


def _parts(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.iterdir() if PART_RE.match(p.name)] if run_dir.is_dir() else []


def _linked_part(run_dir: Path, temp: Path) -> Path | None:
    st = temp.stat()
    if st.st_nlink < 2:
        return None
    return next((p for p in _parts(run_dir) if os.path.samestat(p.stat(), st)), None)


def _part_with_sha(run_dir: Path, sha: str, size: int) -> Path | None:
    return next((p for p in sorted(_parts(run_dir)) if p.stat().st_size == size and _sha256(p) == sha), None)


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


def shard_paths(out: str | Path, table: str, run: str | None = None, batch: str | None = None) -> list[Path]:
    """Visible shards of ``table`` (optionally of one run and/or one batch), in a stable order.

    Without ``batch`` these are the files on disk; with it, the shards whose manifest line carries
    that batch (so a shard is included once its group is committed, not while it is being linked).
    """
    if batch is not None:
        return _batch_paths(out, table, read_manifest(out, table), run, batch)
    pattern = f"run={run}/part-*.parquet" if run else "run=*/part-*.parquet"
    return sorted(table_dir(out, table).glob(pattern))


def _batch_paths(out: str | Path, table: str, entries: list[ShardInfo], run: str | None, batch: str) -> list[Path]:
    tdir = table_dir(out, table)
    paths = {tdir / e.path for e in entries if e.batch == batch and (not run or e.run == run)}
    return sorted(p for p in paths if p.exists())


def runs_of(out: str | Path, table: str) -> list[str]:
    """Runs with at least one visible shard of ``table``, sorted by name."""
    return sorted({p.parent.name.removeprefix("run=") for p in shard_paths(out, table)})


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
    out: str | Path,
    table: str,
    *,
    run: str | None = None,
    batch: str | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """All rows of ``table``, or of one run and/or batch (see :func:`shard_paths`).

    An empty table with the schema if none are written.
    """
    entries = read_manifest(out, table)  # refuses data from a newer schema version
    schema = schema_for(table)
    paths = shard_paths(out, table, run) if batch is None else _batch_paths(out, table, entries, run, batch)
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
        batch: str | None = None,
    ) -> None:
        self.out = Path(out)
        self.table = table
        self.schema = schema_for(table)
        self.run_id = run_id
        self.config_hash = config_hash
        self.batch = batch
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
            self._record(write_shard(self.out, self.table, data, run_id=self.run_id, config_hash=self.config_hash,
                                     batch=self.batch))

    def flush(self) -> ShardInfo | None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return None
        rows, self._rows = self._rows, []
        try:
            data = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise StorageError(f"rows for table {self.table!r} do not match its schema: {e}") from None
        info = write_shard(self.out, self.table, data, run_id=self.run_id, config_hash=self.config_hash,
                           batch=self.batch)
        self._record(info)
        return info

    def _record(self, info: ShardInfo) -> None:
        self.shards.append(info)
        self.rows_written += info.rows

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def iter_batches(out: str | Path, table: str, batch_size: int = 10_000, *, run: str | None = None,
                 columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream ``table`` (optionally one run, projected to ``columns``) in record batches of at most
    ``batch_size`` rows without loading it whole.

    Shards are read one at a time in the order :func:`read_table` concatenates them, so the rows come
    in the same order; each batch has the table's schema (projected), older shards' missing columns
    read as nulls. Memory: one batch plus the row group being decoded.
    """
    read_manifest(out, table)  # refuses data from a newer schema version
    schema = schema_for(table)
    names = schema.names if columns is None else columns
    missing = [c for c in names if c not in schema.names]
    if missing:
        raise StorageError(f"table {table!r} has no column(s) {missing}; it has {schema.names}")
    target = pa.schema([schema.field(c) for c in names], metadata=schema.metadata)
    for path in shard_paths(out, table, run):
        try:
            pf = pq.ParquetFile(path, page_checksum_verification=True)
            have = set(pf.schema_arrow.names)
            for b in pf.iter_batches(batch_size=batch_size, columns=[c for c in names if c in have]):
                arrays = [b.column(f.name).cast(f.type) if f.name in have else pa.nulls(b.num_rows, f.type)
                          for f in target]
                yield pa.RecordBatch.from_arrays(arrays, schema=target)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise _unreadable(out, table, e) from None
