from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from hopforge.errors import LeaseHeldError
from hopforge.storage import Lease
from hopforge.storage import lease as lease_mod

HOLDER = r"""
import os, sys, time
from hopforge.storage import Lease
out, fork, release_after = sys.argv[1], sys.argv[2] == "fork", float(sys.argv[3])
with Lease(out, "rollouts", owner="holder test").acquire():
    if fork:  # a child that outlives its parent must not keep the lease
        child = os.fork()
        if child == 0:
            # The fork hook has run by now; until then the child still shares the lock.
            print("child running", flush=True)
            time.sleep(30)
            os._exit(0)
        print(child, flush=True)
    print("held", flush=True)
    sys.stdin.readline()
    time.sleep(release_after)
print("released", flush=True)
"""


@pytest.fixture
def holder(tmp_path):
    procs, children = [], []

    def start(fork: bool = False, release_after: float = 0.0) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "fork" if fork else "-",
                                 str(release_after)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        lines = {proc.stdout.readline().strip() for _ in range(3 if fork else 1)}  # parent and child race
        if fork:
            assert "child running" in lines
            lines.discard("child running")
            children.extend(int(line) for line in lines if line.isdigit())
            lines -= {str(pid) for pid in children}
        assert lines == {"held"}
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
    for pid in children:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch):
    monkeypatch.setattr(lease_mod, "POLL_S", 0.05)


def _meta(out: Path, name: str = "rollouts") -> dict:
    data = (out / "_leases" / f"{name}.lock").read_bytes()
    return orjson.loads(data) if data.strip() else {}


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_second_process_is_refused_with_the_holders_pid(tmp_path, holder):
    proc = holder()
    with pytest.raises(LeaseHeldError) as err:
        Lease(tmp_path, "rollouts").acquire(wait=False)
    msg = str(err.value)
    assert f"pid {proc.pid} on host {socket.gethostname()}" in msg and "'holder test'" in msg
    assert msg.startswith(f"rollouts on {tmp_path} is held by") and msg.endswith("pass --wait") and "\n" not in msg
    assert err.value.exit_code == 75
    assert _meta(tmp_path)["pid"] == proc.pid


def test_waiting_gives_up_after_the_given_seconds(tmp_path, holder):
    holder()
    t0 = time.monotonic()
    with pytest.raises(LeaseHeldError, match="gave up after waiting 0.3 s"):
        Lease(tmp_path, "rollouts").acquire(wait=0.3)
    assert 0.3 <= time.monotonic() - t0 < 2


def test_lease_of_a_sigkilled_holder_is_taken_at_once(tmp_path, holder):
    proc = holder(fork=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Lease(tmp_path, "rollouts").acquire(wait=False) as lease:
        assert lease.held and _meta(tmp_path)["pid"] == os.getpid()


def test_wait_true_gets_the_lease_once_the_holder_releases(tmp_path, holder):
    proc = holder(release_after=0.3)
    proc.stdin.write("release\n")
    proc.stdin.flush()
    t0 = time.monotonic()
    with Lease(tmp_path, "rollouts").acquire(wait=True):
        assert time.monotonic() - t0 >= 0.2  # it really waited for the holder
        assert proc.stdout.readline().strip() == "released"
        assert _meta(tmp_path)["pid"] == os.getpid()
    assert _meta(tmp_path) == {}  # released: metadata cleared


def test_heartbeat_advances_and_release_clears_the_metadata(tmp_path):
    with Lease(tmp_path, "labels", owner="me", heartbeat_s=0.05).acquire() as lease:
        first = _meta(tmp_path, "labels")
        assert (first["owner"], first["pid"], first["host"]) == ("me", os.getpid(), socket.gethostname())
        time.sleep(0.2)
        later = _meta(tmp_path, "labels")
        assert later["heartbeat_at"] > first["heartbeat_at"] and later["started_at"] == first["started_at"]
    assert not lease.held and _meta(tmp_path, "labels") == {}
    with Lease(tmp_path, "labels").acquire():  # free again
        pass


def _other_host_holds(out: Path, heartbeat_age_s: float) -> None:
    (out / "_leases").mkdir(parents=True)
    now = datetime.now(UTC)
    meta = {"owner": "hopforge run", "host": "elsewhere", "pid": 4242, "started_at": _iso(now - timedelta(hours=1)),
            "heartbeat_at": _iso(now - timedelta(seconds=heartbeat_age_s))}
    (out / "_leases" / "rollouts.lock").write_bytes(orjson.dumps(meta) + b"\n")


def test_fresh_lease_of_another_host_is_respected(tmp_path):
    _other_host_holds(tmp_path, heartbeat_age_s=5)
    with pytest.raises(LeaseHeldError, match=r"'hopforge run' \(pid 4242 on host elsewhere, since .*Z, heartbeat "
                                             r"[56] s ago\)"):
        Lease(tmp_path, "rollouts", ttl_s=60).acquire()
    assert _meta(tmp_path)["host"] == "elsewhere"


def test_stale_lease_of_another_host_is_taken_over_with_a_warning(tmp_path, caplog):
    _other_host_holds(tmp_path, heartbeat_age_s=120)
    with caplog.at_level(logging.WARNING), Lease(tmp_path, "rollouts", ttl_s=60).acquire():
        assert _meta(tmp_path)["host"] == socket.gethostname()
    assert "taking it over from 'hopforge run' (pid 4242 on host elsewhere)" in caplog.text


def test_reacquiring_in_the_same_process_is_an_error_not_a_deadlock(tmp_path):
    with Lease(tmp_path, "rollouts").acquire():
        with pytest.raises(LeaseHeldError, match=f"already held by this process \\(pid {os.getpid()}.*not re-entrant"):
            Lease(tmp_path, "rollouts").acquire(wait=True)
        with Lease(tmp_path, "labels"):  # another name is another lease
            pass
    with Lease(tmp_path, "rollouts"):  # and the refused attempt left nothing behind
        pass
