"""Reliability fixtures: a per-call wall-clock limit (SIGALRM) and RSS readings.

Hypothesis's ``deadline`` only reports a slow example after it returns; a parser
that hangs forever would hang the suite. ``time_limit`` interrupts it instead.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Hang(AssertionError):
    """A call exceeded its wall-clock limit (raised from SIGALRM)."""


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Fail with :class:`Hang` if the block runs longer than ``seconds`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_sig, _frame):
        raise Hang(f"{what} did not return within {seconds:g}s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def rss_bytes(pid: int | None = None) -> int:
    """Current resident set size of ``pid`` (default: this process) from /proc."""
    with open(f"/proc/{pid or os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes(pid: int | None = None) -> int:
    """Peak resident set size (VmHWM) of ``pid``."""
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")
