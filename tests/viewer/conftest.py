"""Fixtures for the viewer tests; the rows themselves are built in viewer_rows.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.viewer.viewer_rows import write_small_run


@pytest.fixture(scope="session")
def _small_run_once(tmp_path_factory) -> Path:
    # Shard writes fsync; building once and copying keeps the suite quick on a busy machine.
    return write_small_run(tmp_path_factory.mktemp("viewer") / "data")


@pytest.fixture
def small_run(_small_run_once, tmp_path) -> Path:
    """A private copy per test: some tests add shards or a data card."""
    return Path(shutil.copytree(_small_run_once, tmp_path / "data"))
