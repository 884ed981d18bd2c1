"""Flow fixtures: ONE session-scoped Prefect test harness for the whole test session.

Other packages' tests that need Prefect should use ``prefect_harness`` from here
(move it to tests/conftest.py if a second package needs it): starting a second
harness costs another ~25 s cold server start on a 2-core VM.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hopforge.flows.environment import apply_prefect_defaults

apply_prefect_defaults()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    """A temporary Prefect API (SQLite in a temp dir, subprocess server on 127.0.0.1);
    yields its URL so subprocesses (``hopforge run``) can use the same API."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # None: use PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (120 s) instead of the harness's 30 s.
    with prefect_test_harness(server_startup_timeout=None):
        yield PREFECT_API_URL.value()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hopforge_env() -> dict[str, str]:
    """Environment for a ``hopforge`` subprocess: this source tree on PYTHONPATH, quiet Prefect."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "PREFECT_LOGGING_LEVEL": "WARNING"}
