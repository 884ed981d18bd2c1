"""Leases: one writer per name and output directory.

``OUT/_leases/<name>.lock`` is held with ``flock(LOCK_EX | LOCK_NB)``. The kernel drops the
lock when its holder dies, so a SIGKILLed run never blocks the next one. The file's contents
(one JSON line: owner, host, pid, started_at, heartbeat_at, refreshed by a daemon thread) name
the holder in :class:`~hopforge.errors.LeaseHeldError`, and matter for one more case: on a shared
filesystem another host's ``flock`` may not reach us, so metadata naming another host with a
heartbeat fresher than ``ttl_s`` counts as held even when our ``flock`` succeeds.

The lock file is never deleted or replaced, and its metadata is rewritten in place: a lock
lives on an inode, and a second inode under the same name would let two holders in at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hopforge.errors import LeaseHeldError, StorageError

log = logging.getLogger(__name__)

LEASE_DIR = "_leases"
POLL_S = 0.5  # how often wait=True / wait=<seconds> retries
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Leases held (or being acquired) by this process, by lock path: a second acquire of the same one
# would otherwise wait on our own lock forever.
_held: dict[str, Lease] = {}
_held_lock = threading.Lock()


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _age_s(meta: dict[str, Any], key: str = "heartbeat_at") -> float | None:
    try:
        return (_now() - datetime.fromisoformat(meta[key])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _default_owner() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:2]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(argv)[:80]


class Lease:
    """An exclusive, named lease on an output directory.

    Use ``with Lease(out, "rollouts").acquire(): ...`` (``with Lease(...)`` alone acquires with
    ``wait=False``). Not re-entrant: acquiring a lease this process already holds raises
    :class:`LeaseHeldError` instead of waiting for itself. A child forked while the lease is held
    does not keep it: the lease belongs to the process that acquired it. (The child closes its
    copy of the lock in a fork hook, the first thing it runs; a parent killed before the child was
    ever scheduled leaves the lock held until then, which is microseconds on an idle machine.)
    """

    def __init__(self, out: str | Path, name: str, *, owner: str = "", ttl_s: float = 60,
                 heartbeat_s: float = 10) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"lease name {name!r} must be letters, digits, '_', '.' or '-'")
        if not 0 < heartbeat_s < ttl_s:
            raise ValueError(f"lease {name!r}: heartbeat_s ({heartbeat_s}) must be positive and below ttl_s ({ttl_s})")
        self.out = Path(out).absolute()
        self.name = name
        self.owner = owner or _default_owner()
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self.path = self.out / LEASE_DIR / f"{name}.lock"
        self._fd: int | None = None
        self._meta: dict[str, Any] = {}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool | float = False) -> Lease:
        """Take the lease and return self (a context manager that releases it).

        ``wait=False`` raises :class:`LeaseHeldError` at once if another process holds it;
        ``wait=True`` retries every :data:`POLL_S` seconds until it is free; a number of seconds
        retries for that long, then raises.
        """
        key = str(self.path)
        with _held_lock:
            mine = _held.get(key)
            if mine is not None:
                raise LeaseHeldError(f"{self.name} on {self.out} is already held by this process (pid {os.getpid()}, "
                                     f"owner {mine.owner!r}); a lease is not re-entrant")
            _held[key] = self
        try:
            deadline = None if isinstance(wait, bool) else time.monotonic() + float(wait)
            started = time.monotonic()
            while (holder := self._try_lock()) is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if wait is False or (left is not None and left <= 0):
                    raise LeaseHeldError(self._held_message(holder, time.monotonic() - started if wait else None))
                time.sleep(POLL_S if left is None else min(POLL_S, left))
        except BaseException:
            with _held_lock:
                _held.pop(key, None)
            raise
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease-{self.name}", daemon=True)
        self._beat.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat, clear the metadata and unlock. A no-op if not held."""
        fd = self._fd
        if fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        try:
            os.ftruncate(fd, 0)  # an empty file: nobody holds it
        except OSError as e:
            log.warning("lease %s on %s: could not clear its metadata: %s", self.name, self.out, e)
        finally:
            self._fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            with _held_lock:
                _held.pop(str(self.path), None)

    def __enter__(self) -> Lease:
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _try_lock(self) -> dict[str, Any] | None:
        """Lock and record ourselves as holder (None), or return the current holder's metadata."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"cannot open lease file {self.path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            meta = _read_meta(fd)
            os.close(fd)
            return meta
        except OSError as e:
            os.close(fd)
            raise StorageError(f"cannot lock lease file {self.path}: {e}") from e
        meta = _read_meta(fd)
        host = socket.gethostname()
        if meta.get("host") not in (None, host):
            age = _age_s(meta)
            if age is not None and age < self.ttl_s:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                return meta
            log.warning("lease %s on %s: taking it over from %r (pid %s on host %s), whose heartbeat is %s old "
                        "(ttl %g s)", self.name, self.out, meta.get("owner"), meta.get("pid"), meta.get("host"),
                        "unknown" if age is None else f"{age:.0f} s", self.ttl_s)
        elif meta:
            log.info("lease %s on %s: its previous holder (pid %s) ended without releasing it", self.name,
                     self.out, meta.get("pid"))
        now = _iso(_now())
        self._meta = {"owner": self.owner, "host": host, "pid": os.getpid(), "started_at": now, "heartbeat_at": now}
        self._fd = fd
        try:
            self._write_meta()
        except OSError as e:
            self._fd = None
            os.close(fd)
            raise StorageError(f"cannot write lease file {self.path}: {e}") from e
        return None

    def _write_meta(self) -> None:
        fd = self._fd
        if fd is None:
            return
        data = orjson.dumps(self._meta) + b"\n"
        # Write, then trim: a reader sees the old line, the new one, or the new one followed by a
        # stale tail after its newline, never an empty file (readers keep the first line only).
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)  # another host reads the heartbeat through the file server

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._meta["heartbeat_at"] = _iso(_now())
            try:
                self._write_meta()
            except OSError as e:
                log.warning("lease %s on %s: heartbeat failed: %s", self.name, self.out, e)

    def _held_message(self, meta: dict[str, Any], waited: float | None) -> str:
        if meta:
            beat = _age_s(meta)
            since = str(meta.get("started_at", "?"))
            since = since[:19] + "Z" if len(since) > 19 else since
            who = (f"{meta.get('owner') or 'an unnamed owner'!r} (pid {meta.get('pid', '?')} on host "
                   f"{meta.get('host', '?')}, since {since}, heartbeat "
                   f"{'?' if beat is None else f'{max(0.0, beat):.0f}'} s ago)")
        else:
            who = "another process (that has not recorded its details yet)"
        tail = f"; gave up after waiting {waited:.1f} s" if waited is not None else "; wait for it or pass --wait"
        return f"{self.name} on {self.out} is held by {who}{tail}"


def _read_meta(fd: int) -> dict[str, Any]:
    """The holder's metadata ({} if none): the first line, read again if caught mid-write."""
    for _ in range(3):
        line = os.pread(fd, 64 * 1024, 0).split(b"\n", 1)[0]
        if not line.strip():
            return {}
        try:
            meta = orjson.loads(line)
            return meta if isinstance(meta, dict) else {}
        except orjson.JSONDecodeError:
            time.sleep(0.01)
    return {}


def _forget_inherited() -> None:
    """In a forked child: close the inherited lock fds (not unlock: that would free the parent's)."""
    global _held_lock
    _held_lock = threading.Lock()  # another thread may have held it at fork time
    for lease in _held.values():
        if lease._fd is not None:
            os.close(lease._fd)
            lease._fd = None
        lease._beat = None
    _held.clear()


os.register_at_fork(after_in_child=_forget_inherited)
